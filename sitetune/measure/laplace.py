"""The Laplace solve of `sitetune.measure.thickness.wall_thickness`: ``div grad u = 0`` on
the wall cells, ``u = 0`` at the endocardium and 1 at the epicardium (at their sub-voxel
distances, `sitetune.measure.surfaces.Links`).

Finite volumes give a symmetric positive definite system, kept matrix-free
(`LaplaceSystem`) and solved by Jacobi-preconditioned conjugate gradients in float32:
compiled with numba (parallel row loops), or in torch on a device
(:mod:`sitetune.measure.thickness_torch`, imported only then).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np

from sitetune.measure.surfaces import Links

if TYPE_CHECKING:  # torch is imported only when a device is asked for
    import torch


def solve_laplace(
    links: Links, spacing: np.ndarray, tolerance: float, device: torch.device | None = None
) -> tuple[np.ndarray, int]:
    """Finite-volume Laplace on the wall cells, ``u = 0`` at the inner surface and 1 at
    the outer one (at their sub-voxel distances); Jacobi-preconditioned CG from ``u =
    0.5``, with numba (``device`` None) or torch. ``(u, iterations)``."""
    system = _laplace_system(links, spacing)
    start = np.full(system.rhs.size, 0.5, dtype=np.float32)
    if device is None:
        u, iterations = _pcg(system, start, tolerance)
    else:
        from sitetune.measure.thickness_torch import pcg

        u, iterations = pcg(system, start, tolerance, device)
    return u.astype(np.float64), iterations


@dataclass(frozen=True)
class LaplaceSystem:
    """The finite-volume Laplace system ``A u = rhs`` on the wall cells, matrix-free:
    ``A_ii = diagonal_i`` and ``A_ij = -conductance[axis]`` for a wall neighbour ``j``
    across a face on ``axis``; all float32.

    A face to a wall neighbour conducts ``area / spacing``, a face on a surface ``area /
    distance`` to the sub-voxel boundary value (0 inner, 1 outer), which enters ``rhs``.
    Float32: the solve is memory-bound and u in [0, 1] needs no more than float32's 7
    digits at the tolerance. The wall neighbours are bit ``f`` of ``faces`` for `Links`
    column ``f``; along the last (fastest) axis they are cells ``i - 1`` and ``i + 1``
    (cells are numbered in C order), along the first two their numbers are in ``across``
    (``(n, 4)``, the cell itself where there is none).
    """

    across: np.ndarray
    faces: np.ndarray
    diagonal: np.ndarray
    conductance: np.ndarray
    rhs: np.ndarray


def _laplace_system(links: Links, spacing: np.ndarray) -> LaplaceSystem:
    """Assemble `LaplaceSystem` from the links."""
    area = (np.prod(spacing) / spacing)[Links.AXIS]  # face area of each column
    conductance = area / spacing[Links.AXIS]
    across, faces, diagonal, rhs = _laplace_arrays(
        links.cell, links.kind, links.distance, area, conductance
    )
    return LaplaceSystem(across, faces, diagonal, conductance[::2].astype(np.float32), rhs)


@numba.njit(cache=True, parallel=True, nogil=True)
def _laplace_arrays(cell, kind, distance, area, conductance):  # pragma: no cover (compiled)
    """``(across, faces, diagonal, rhs)`` of `LaplaceSystem`."""
    n = cell.shape[0]
    across = np.empty((n, 4), dtype=np.int32)
    faces = np.zeros(n, dtype=np.uint8)
    diagonal = np.empty(n, dtype=np.float32)
    rhs = np.empty(n, dtype=np.float32)
    for i in numba.prange(n):
        total, outer, mask = 0.0, 0.0, 0
        for f in range(6):
            k = kind[i, f]
            if k == 0:
                total += conductance[f]
                mask |= 1 << f
            elif k == 1 or k == 2:
                g = area[f] / distance[i, f]
                total += g
                if k == 2:
                    outer += g
            if f < 4:
                across[i, f] = cell[i, f] if k == 0 else i
        diagonal[i], rhs[i], faces[i] = total, outer, mask
    return across, faces, diagonal, rhs


def _pcg(system: LaplaceSystem, x: np.ndarray, tolerance: float) -> tuple[np.ndarray, int]:
    """Jacobi-preconditioned conjugate gradients (in place on ``x``, the start), until
    ``r . D^-1 r <= tolerance^2 rhs . D^-1 rhs`` (the residual of the Jacobi-scaled
    system); ``(x, iterations)``."""
    iterations = _pcg_kernel(
        system.across, system.faces, system.diagonal, system.conductance, system.rhs, x,
        tolerance, 20 * x.size,
    )  # fmt: skip
    if iterations < 0:
        raise RuntimeError("Laplace solve did not converge")
    return x, iterations


@numba.njit(cache=True, inline="always")
def _apply(across, faces, diagonal, g, p, i):  # pragma: no cover (compiled)
    """Row ``i`` of `LaplaceSystem`'s matrix times ``p``."""
    mask = faces[i]
    acc = diagonal[i] * p[i]
    if mask & 1:
        acc -= g[0] * p[across[i, 0]]
    if mask & 2:
        acc -= g[0] * p[across[i, 1]]
    if mask & 4:
        acc -= g[1] * p[across[i, 2]]
    if mask & 8:
        acc -= g[1] * p[across[i, 3]]
    if mask & 16:
        acc -= g[2] * p[i - 1]
    if mask & 32:
        acc -= g[2] * p[i + 1]
    return acc


@numba.njit(cache=True, parallel=True, nogil=True)
def _pcg_kernel(
    across, faces, diagonal, g, rhs, x, tolerance, max_iterations
):  # pragma: no cover (compiled)
    """`_pcg` with parallel row loops, the matrix product fused with the dot product it
    feeds (dots accumulate in float64). Returns the iterations, or -1 without
    convergence."""
    n = rhs.shape[0]
    r = np.empty(n, dtype=np.float32)
    p = np.empty(n, dtype=np.float32)
    q = np.empty(n, dtype=np.float32)
    rz = 0.0
    norm = 0.0
    for i in numba.prange(n):
        r[i] = rhs[i] - _apply(across, faces, diagonal, g, x, i)
        p[i] = r[i] / diagonal[i]
        rz += np.float64(r[i]) * p[i]
        norm += np.float64(rhs[i]) * rhs[i] / diagonal[i]
    goal = tolerance * tolerance * norm
    for iteration in range(1, max_iterations + 1):
        pq = 0.0
        for i in numba.prange(n):
            q[i] = _apply(across, faces, diagonal, g, p, i)
            pq += np.float64(p[i]) * q[i]
        alpha = np.float32(rz / pq)
        rz_new = 0.0
        for i in numba.prange(n):
            x[i] += alpha * p[i]
            r[i] -= alpha * q[i]
            rz_new += np.float64(r[i]) * r[i] / diagonal[i]
        if rz_new <= goal:
            return iteration
        beta = np.float32(rz_new / rz)
        rz = rz_new
        for i in numba.prange(n):
            p[i] = r[i] / diagonal[i] + beta * p[i]
    return -1
