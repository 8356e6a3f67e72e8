"""Myocardial wall thickness by Laplace's equation and Yezzi-Prince path lengths.

The wall (label 2) lies between the endocardium (facing the blood pool, label 1) and the
epicardium (facing everything else). We solve Laplace's equation ``div grad u = 0`` on
the wall voxels with ``u = 0`` on the endocardium and ``u = 1`` on the epicardium; the
field lines of ``T = grad u / |grad u|`` run from one surface to the other without
crossing, and the thickness at a voxel is the length of its field line,
``L0 + L1``, where ``grad L0 . T = 1`` (``L0 = 0`` on the endocardium) and
``-grad L1 . T = 1`` (``L1 = 0`` on the epicardium) (Yezzi & Prince, IEEE TMI 2003).

Accuracy comes from three places the usual voxel implementations skip:

- **Sub-voxel boundaries.** Each surface crosses the segment between a wall voxel centre
  and its neighbour at a fraction ``theta`` of the spacing, estimated from the zero of a
  lightly smoothed indicator of the neighbouring region (anti-aliasing recovers the
  sub-voxel position of oblique and curved surfaces; for axis-aligned ones it is the
  midpoint). Both the Laplace discretisation (finite volumes with cut distances) and the
  path-length boundary conditions use ``theta``, so a wall is not one voxel too thin or
  too thick.
- **Anisotropic spacing** enters every difference quotient and face area exactly.
- **Path lengths** are first-order upwind, which is exact for planar fields of any
  orientation; solved in one pass as a sparse triangular system in order of ``u``.

The Laplace system is symmetric positive definite (finite volumes), solved by conjugate
gradients with a Jacobi preconditioner: on a thin wall it converges in a number of
iterations proportional to the thickness in voxels, not to the volume size.

The open LV base (blood pool touching the background with no wall between) needs no
special case: only wall voxels are unknowns, and where the wall ends at the base ring its
cut face borders the outside (``u = 1``) like the epicardium.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy import ndimage
from scipy.sparse.linalg import cg, spsolve_triangular

from sitetune.errors import InvalidInput

_THETA_MIN = 0.05  # a surface is never closer than this fraction of a spacing to a centre


@dataclass(frozen=True)
class ThicknessResult:
    """Thickness in mm at every wall voxel (0 elsewhere), with summary statistics."""

    thickness_mm: np.ndarray  # float32, the label map's shape
    stats: dict[str, float]
    method: dict = field(default_factory=dict)


def _summary(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"mean": 0.0, "median": 0.0, "p95": 0.0, "max": 0.0}
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
    }


def _crossing_fraction(region: np.ndarray, sigma_vox: np.ndarray) -> np.ndarray:
    """Smoothed indicator of ``region`` minus 0.5: its zero is the sub-voxel surface."""
    return ndimage.gaussian_filter(region.astype(np.float32), sigma_vox, mode="nearest") - 0.5


def _neighbours(index: np.ndarray, shape: tuple[int, ...], axis: int, step: int):
    """Flat indices of the neighbour along ``axis`` (``step`` = +-1) and a validity mask."""
    coords = np.unravel_index(index, shape)
    moved = coords[axis] + step
    valid = (moved >= 0) & (moved < shape[axis])
    moved = np.clip(moved, 0, shape[axis] - 1)
    new = list(coords)
    new[axis] = moved
    return np.ravel_multi_index(new, shape), valid


def _theta(f_here: np.ndarray, f_there: np.ndarray) -> np.ndarray:
    """Fraction of the way from here to there where the smoothed field crosses zero."""
    denom = f_here - f_there
    theta = np.where(np.abs(denom) > 1e-6, f_here / np.where(denom == 0, 1, denom), 0.5)
    return np.clip(theta, _THETA_MIN, 1.0)


def wall_thickness(
    labels: np.ndarray,
    spacing,
    *,
    inner: int = 1,
    wall: int = 2,
    smoothing_voxels: float = 1.0,
    tolerance: float = 1e-7,
) -> ThicknessResult:
    """Thickness (mm) of the ``wall`` label between ``inner`` and everything else.

    Args:
        labels: ``(X, Y, Z)`` integer label map (1 blood pool, 2 myocardium by default).
        spacing: voxel size in mm along X, Y, Z.
        smoothing_voxels: Gaussian sigma (in voxels of the finest axis) of the indicator
            smoothing that places the surfaces at sub-voxel positions.
        tolerance: relative residual of the Laplace solve.

    Raises:
        InvalidInput: no wall voxels, or no inner region touching the wall.
    """
    started = time.perf_counter()
    labels = np.asarray(labels)
    spacing = np.asarray(spacing, dtype=np.float64)
    if labels.ndim != 3 or spacing.shape != (3,):
        raise ValueError(f"need a 3D label map and 3 spacings, got {labels.shape}, {spacing}")
    is_wall = labels == wall
    if not is_wall.any():
        raise InvalidInput(f"the mask has no myocardium (label {wall})", code="no_myocardium")
    if not (labels == inner).any():
        raise InvalidInput(f"the mask has no blood pool (label {inner})", code="no_blood_pool")
    # Work in the wall's bounding box, with a margin for the smoothing and the neighbours.
    margin = int(np.ceil(3 * smoothing_voxels)) + 2
    box = tuple(
        slice(max(a - margin, 0), min(b + margin + 1, n))
        for a, b, n in zip(
            *(np.argwhere(is_wall).min(0), np.argwhere(is_wall).max(0)), labels.shape, strict=True
        )
    )
    sub = labels[box]
    shape = sub.shape
    is_wall_sub = sub == wall
    is_inner = sub == inner
    sigma = smoothing_voxels * spacing.min() / spacing
    f_inner = _crossing_fraction(is_inner, sigma).ravel()
    f_outer = _crossing_fraction(~is_inner & ~is_wall_sub, sigma).ravel()
    flat_inner, flat_wall = is_inner.ravel(), is_wall_sub.ravel()

    cells = np.flatnonzero(flat_wall)
    n = cells.size
    number = np.full(sub.size, -1, dtype=np.int64)
    number[cells] = np.arange(n)
    area = np.prod(spacing) / spacing  # face area normal to each axis

    diag = np.zeros(n)
    rhs = np.zeros(n)
    rows, cols, vals = [], [], []
    # Per axis and direction: distance to the value the upwind path-length scheme uses.
    links = []  # (axis, step, neighbour cell number or -1, boundary kind, distance)
    for axis in range(3):
        h = spacing[axis]
        for step in (-1, 1):
            nb, valid = _neighbours(cells, shape, axis, step)
            nb_wall = valid & flat_wall[nb]
            nb_inner = valid & flat_inner[nb]
            nb_outer = valid & ~flat_wall[nb] & ~flat_inner[nb]
            g = area[axis] / h
            src = np.flatnonzero(nb_wall)
            rows.append(src)
            cols.append(number[nb[nb_wall]])
            vals.append(np.full(src.size, -g))
            diag[nb_wall] += g
            theta = np.ones(n)
            theta[nb_inner] = _theta(f_inner[cells[nb_inner]], f_inner[nb[nb_inner]])
            theta[nb_outer] = _theta(f_outer[cells[nb_outer]], f_outer[nb[nb_outer]])
            boundary = nb_inner | nb_outer
            gb = area[axis] / (theta[boundary] * h)
            diag[boundary] += gb
            rhs[nb_outer] += area[axis] / (theta[nb_outer] * h)
            kind = np.where(nb_wall, 0, np.where(nb_inner, 1, np.where(nb_outer, 2, 3)))
            links.append((axis, step, np.where(nb_wall, number[nb], -1), kind, theta * h))
    laplacian = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    laplacian = laplacian + sp.diags(diag)
    preconditioner = sp.diags(1.0 / diag)
    iterations = 0

    def count(_):
        nonlocal iterations
        iterations += 1

    u, info = cg(
        laplacian,
        rhs,
        x0=np.full(n, 0.5),
        rtol=tolerance,
        maxiter=20 * n,
        M=preconditioner,
        callback=count,
    )
    if info != 0:
        raise RuntimeError(f"Laplace solve did not converge ({info})")

    gradient = _gradient(u, links)
    norm = np.linalg.norm(gradient, axis=1)
    tangent = gradient / np.maximum(norm, 1e-12)[:, None]
    order = np.argsort(u, kind="stable")
    l0 = _path_length(tangent, links, order, boundary_kind=1, direction=+1)
    l1 = _path_length(tangent, links, order[::-1], boundary_kind=2, direction=-1)
    values = (l0 + l1).astype(np.float32)
    out = np.zeros(labels.shape, dtype=np.float32)
    out_sub = np.zeros(sub.size, dtype=np.float32)
    out_sub[cells] = values
    out[box] = out_sub.reshape(shape)
    return ThicknessResult(
        out,
        _summary(values),
        {
            "name": "laplace-yezzi",
            "boundaries": "sub-voxel (smoothed indicator)",
            "smoothing_voxels": smoothing_voxels,
            "laplace_solver": "jacobi-pcg",
            "laplace_iterations": iterations,
            "wall_voxels": int(n),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )


def _gradient(u: np.ndarray, links) -> np.ndarray:
    """Non-uniform central differences of ``u``: a wall neighbour one spacing away, a
    boundary value (0 or 1) at its sub-voxel distance, or (array edge) ``u`` itself."""
    sides = {}
    for axis, step, nb, kind, distance in links:
        value = np.select([kind == 0, kind == 1, kind == 2], [u[np.maximum(nb, 0)], 0.0, 1.0], u)
        sides[(axis, step)] = (value, distance)
    grad = np.zeros((u.size, 3))
    for axis in range(3):
        up, d_up = sides[(axis, 1)]
        down, d_down = sides[(axis, -1)]
        grad[:, axis] = ((up - u) * d_down / d_up + (u - down) * d_up / d_down) / (d_up + d_down)
    return grad


def _path_length(
    tangent: np.ndarray, links, order: np.ndarray, *, boundary_kind: int, direction: int
) -> np.ndarray:
    """Upwind solution of ``direction * grad L . T = 1`` with ``L = 0`` on one surface."""
    n = tangent.shape[0]
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    diag = np.zeros(n)
    rows, cols, vals = [], [], []
    for axis, step, nb, kind, distance in links:
        component = direction * tangent[:, axis]
        upwind = np.sign(component) == -step  # the path comes from this neighbour
        weight = np.abs(component) / distance
        from_wall = upwind & (kind == 0)
        # Couple to wall neighbours earlier in the sweep (later ones: Neumann, dropped).
        earlier = from_wall & (position[np.maximum(nb, 0)] < position)
        from_boundary = upwind & (kind == boundary_kind)
        use = earlier | from_boundary
        diag[use] += weight[use]
        src = np.flatnonzero(earlier)
        rows.append(position[src])
        cols.append(position[nb[earlier]])
        vals.append(-weight[earlier])
    stuck = diag == 0  # no upwind information at all (isolated voxel): length 0 + spacing
    diag[stuck] = 1.0
    matrix = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    matrix = matrix + sp.diags(diag[order])
    solution = spsolve_triangular(matrix.tocsr(), np.ones(n), lower=True)
    out = np.empty(n)
    out[order] = solution
    return out
