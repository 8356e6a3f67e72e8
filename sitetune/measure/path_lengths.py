"""Yezzi-Prince path lengths of `sitetune.measure.thickness.wall_thickness`: the direction
``T = grad u / |grad u|`` of the potential's field lines, then the lengths ``L0`` from the
endocardium and ``L1`` from the epicardium along them (``grad L0 . T = 1``, ``-grad L1 . T =
1``), first-order upwind.

The upwind system is triangular in order of ``u``: one compiled (numba) pass per surface
solves it; with a torch device, Jacobi sweeps of the same system
(:mod:`sitetune.measure.thickness_torch`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numba
import numpy as np

if TYPE_CHECKING:  # torch is imported only when a device is asked for
    import torch

    from sitetune.measure.surfaces import Links


@numba.njit(cache=True, parallel=True, nogil=True)
def unit_gradient(u, cell, kind, distance):  # pragma: no cover (compiled)
    """Unit vectors along ``grad u`` (0 where it vanishes), by non-uniform central
    differences: a wall neighbour one spacing away, a boundary value (0 inner, 1 outer)
    at its sub-voxel distance, or (array edge) ``u`` itself."""
    out = np.zeros((u.shape[0], 3))
    for i in numba.prange(u.shape[0]):
        norm = 0.0
        for axis in range(3):
            down = _neighbour_value(u, cell, kind, i, 2 * axis)
            up = _neighbour_value(u, cell, kind, i, 2 * axis + 1)
            d_down, d_up = distance[i, 2 * axis], distance[i, 2 * axis + 1]
            g = ((up - u[i]) * d_down / d_up + (u[i] - down) * d_up / d_down) / (d_up + d_down)
            out[i, axis] = g
            norm += g * g
        if norm > 0.0:
            out[i] /= np.sqrt(norm)
    return out


@numba.njit(cache=True, parallel=True, nogil=True)
def surface_cell_tangents(tangent, cell, kind, on_surface):  # pragma: no cover (compiled)
    """``tangent`` with the cells a surface passes through (``on_surface``, from
    `surfaces.surface_links`) given the mean direction of their other wall neighbours'
    tangents.

    There the central differences read boundary values at the clipped distance on every
    such face, whatever the geometry, and tilt the tangent towards those faces (up to
    0.6 voxel of path length at the pole of a sphere whose surface passes through a cell
    centre). A cell with no such neighbour keeps its own."""
    out = tangent.copy()
    for i in numba.prange(tangent.shape[0]):
        if not on_surface[i]:
            continue
        total = np.zeros(3)
        for f in range(6):
            if kind[i, f] == 0 and not on_surface[cell[i, f]]:
                total += tangent[cell[i, f]]
        norm = np.sqrt((total * total).sum())
        if norm > 0.0:
            out[i] = total / norm
    return out


@numba.njit(cache=True, inline="always")
def _neighbour_value(u, cell, kind, i, face):  # pragma: no cover (compiled)
    """``u`` across a face of cell ``i``: the wall neighbour's, the boundary value (0
    inner, 1 outer), or (array edge) ``u[i]`` itself."""
    k = kind[i, face]
    if k == 0:
        return u[cell[i, face]]
    return u[i] if k == 3 else k - 1.0


def path_lengths(
    tangent: np.ndarray, links: Links, order: np.ndarray, device: torch.device | None
) -> tuple[tuple[np.ndarray, int], tuple[np.ndarray, int]]:
    """Path lengths from the inner surface (``L0``) and from the outer one (``L1``):
    ``((L0, sweeps), (L1, sweeps))``, upwind solutions of ``direction * grad L . T = 1``
    with ``L = 0`` on the surface (`_upwind_pass`). On the CPU (``device`` None) one
    compiled pass per surface in order of the potential solves the triangular system
    directly (sweeps 0), the two passes side by side in two threads; with torch, Jacobi
    sweeps of the same system on the device."""
    max_step = float(links.distance.max())
    if device is not None:
        from sitetune.measure.thickness_torch import upwind_path_lengths

        return upwind_path_lengths(
            tangent, links.cell, links.kind, links.distance, order, max_step, device
        )

    upstream, weight = _upwind_faces(order, tangent, links.cell, links.kind, links.distance)

    def one_pass(surface: int) -> tuple[np.ndarray, int]:
        out = np.empty(tangent.shape[0])
        _upwind_pass(order, upstream[surface], weight[surface], surface, max_step, out)
        return out, 0

    with ThreadPoolExecutor(2) as pool:
        l1 = pool.submit(one_pass, 1)
        return one_pass(0), l1.result()


@numba.njit(cache=True, parallel=True, nogil=True)
def _upwind_faces(order, tangent, cell, kind, distance):  # pragma: no cover (compiled)
    """The upwind faces of every cell for the two passes of `_upwind_pass`:
    ``(upstream, weight)``, each ``(2, n, 3)`` (pass 0 from the inner surface, visiting
    cells in ``order``; pass 1 from the outer one, in reverse; per axis).

    Per axis the upwind face is the -1 face where the pass's direction (``T`` for pass
    0, ``-T`` for pass 1) has a positive component, the +1 face where negative; its
    weight is ``|T_axis| / distance``. ``upstream`` is the wall neighbour across it where
    that comes earlier in the pass's visiting order, -2 where the face is on the pass's
    own surface, -1 otherwise (no component, a later or no neighbour, the other surface).
    """
    n = order.size
    position = np.empty(n, dtype=np.int64)
    for k in numba.prange(n):
        position[order[k]] = k
    upstream = np.empty((2, n, 3), dtype=np.int32)
    weight = np.zeros((2, n, 3))
    for i in numba.prange(n):
        for axis in range(3):
            for surface in range(2):
                component = tangent[i, axis] if surface == 0 else -tangent[i, axis]
                upstream[surface, i, axis] = -1
                if component == 0.0:
                    continue
                face = 2 * axis + 1 if component < 0.0 else 2 * axis
                weight[surface, i, axis] = abs(component) / distance[i, face]
                if kind[i, face] == 0:
                    earlier = position[cell[i, face]] - position[i]
                    if (earlier < 0) if surface == 0 else (earlier > 0):
                        upstream[surface, i, axis] = cell[i, face]
                elif kind[i, face] == surface + 1:
                    upstream[surface, i, axis] = -2
    return upstream, weight


@numba.njit(cache=True, nogil=True)
def _upwind_pass(order, upstream, weight, surface, max_step, out):  # pragma: no cover
    """Visit cells in ``order`` (``surface`` 0) or in reverse (1); each takes the
    weighted mean of its upwind wall neighbours already visited (and 0 at its upwind
    faces on the surface) plus the step ``1 / sum(weights)`` (`_upwind_faces`).

    With every upwind face present the step is at most the largest face distance (the
    tangent is a unit vector); where the order drops the main upwind neighbour (the field
    and the order disagree) only minor directions remain, so the step is capped there.
    A cell with no upwind information at all (isolated) gets the capped step of 1.
    """
    n = order.size
    for step in range(n):
        i = order[step] if surface == 0 else order[n - 1 - step]
        diag = 0.0
        total = 0.0
        for axis in range(3):
            j = upstream[i, axis]
            if j >= 0:
                diag += weight[i, axis]
                total += weight[i, axis] * out[j]
            elif j == -2:
                diag += weight[i, axis]
        if diag == 0.0:
            diag = 1.0
        out[i] = total / diag + min(1.0 / diag, max_step)
