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
  and its neighbour at a fraction ``theta`` of the spacing, estimated from the 0.5 level
  of the neighbouring region's indicator smoothed by a Gaussian that is isotropic in mm
  (anti-aliasing recovers the sub-voxel position of oblique and curved surfaces; for
  axis-aligned ones it is the midpoint). A plane's smoothed indicator is ``Phi(d /
  sigma)`` in its signed distance ``d``, so the two end values are mapped through the
  inverse normal CDF (probit) to distances before the linear interpolation: it is then
  exact for a smoothed plane wherever it cuts the segment, where interpolating the
  S-shaped indicator itself pulls the cut towards the midpoint. Both the Laplace
  discretisation (finite volumes with cut distances) and the path-length boundary
  conditions use ``theta``, so a wall is not one voxel too thin or too thick. A surface
  is never placed closer to a cell centre than 5 % of the coarsest spacing (the same
  distance along every axis); in a cell it passes that close to, the direction of the
  field line comes from the wall neighbours, not from differences of clipped distances.
- **Coarse slices.** Where one axis is coarser than the others (``spacing`` ratio above
  1.2), a surface nearly parallel to the slices is sampled as wide flat terraces: a
  1.5-voxel smoothing sees one terrace and puts the cut at the midpoint between slices,
  up to half a slice off (the cap of a dome). There the smoothing is wider (3 mm, and
  6 mm for slice-axis links under a summit or a terrace wider than that, measured by the
  in-plane distance to the region's contour in the two slices), wide enough to see the
  neighbouring terraces, and the smoothing's own bias is removed: the 0.5 level of a
  smoothed curved surface lies ``sigma^2 / 2 * div(n)`` inside it (``n`` the unit
  normal, mean curvature), which is added back to the probit distance. On the analytic
  phantoms this halves the maximum error at 0.5x0.5x0.7 mm and 1x1x2 mm
  (``bench/thickness.py``).
- **Fitted surfaces** (``surfaces="fitted"``, the default): the smoothing cannot read a
  terrace's sub-voxel height, which lies in the widths of the terraces around it;
  :mod:`sitetune.measure.surface_fit` fits each surface locally to the column intervals
  of its staircase instead, starting from the smoothing's placement. At near-isotropic
  spacing every link is fitted, which halves the placement error at 1 mm. With coarse
  slices only the in-plane links are (the slice-axis links keep the summit-aware
  smoothing, which places them better): all of them from a slice ratio of 1.8, below it
  those on caps (surface within ~32 degrees of the slice plane), with wider windows.
  ``surfaces="smoothed"`` stops at the smoothing: about 0.6 of the time at 256^3, and
  it misses the max target at some centre offsets (``bench/thickness.py``).
- **Anisotropic spacing** enters every difference quotient and face area exactly.
- **Path lengths** are first-order upwind, which is exact for planar fields of any
  orientation; the upwind system is triangular in order of ``u``, so one pass over the
  cells in that order solves it.

The Laplace system is symmetric positive definite (finite volumes), solved matrix-free
by conjugate gradients with a Jacobi preconditioner: on a thin wall it converges in a
number of iterations proportional to the thickness in voxels, not to the volume size.
The hot loops (neighbours, system, CG with parallel row loops, the upwind tables and
passes, the surface fits) are compiled with numba (cached on disk after the first call).

With ``device=`` set, the two solves run in torch (CPU or CUDA) on the same discrete
equations; see :mod:`sitetune.measure.thickness_torch`.

The open LV base (blood pool touching the background with no wall between) needs no
special case: only wall voxels are unknowns, and where the wall ends at the base ring its
cut face borders the outside (``u = 1``) like the epicardium.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import edt
import numba
import numpy as np
from scipy import ndimage
from scipy.special import ndtri

from sitetune.errors import InvalidInput
from sitetune.measure.labels import Surfaces
from sitetune.measure.surface_fit import COARSE_SLICES, ISOTROPIC, fitted_crossings

if TYPE_CHECKING:  # torch is imported only when a device is asked for
    import torch

# A surface is never placed closer to a wall cell's centre than this fraction of the coarsest
# spacing, the same distance along every axis: a per-axis fraction would put the nearest
# surface twice as far along a slice axis twice as coarse, which tilts grad u (and so the
# path) towards the slices in a cell the surface passes through.
_CLOSEST_SURFACE = 0.05
_PROBIT_CLIP = 1e-7  # keeps the probit of a saturated indicator finite


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


_ANISOTROPY = 1.2  # coarsest / finest spacing above which the slices count as coarse
_SLICE_SMOOTHING_MM = 3.0  # smoothing of the surfaces of a volume with coarse slices
_SUMMIT_SMOOTHING_MM = 6.0  # ... for slice-axis links under a summit or wide terrace
_NO_CONTOUR = 1e6  # mm: in-plane distance of a voxel whose slice has no contour
# Fitted surfaces with coarse slices: in-plane links only, and below this slice ratio only
# those where the surface is within ~32 degrees of the slice plane (cosine below).
_FIT_EVERY_IN_PLANE_LINK = 1.8
_FIT_CAP_NORMAL = 0.85


@dataclass(frozen=True)
class _SurfaceField:
    """A region's indicator smoothed by a Gaussian of ``sigma_mm``, from which `distance`
    reads the signed distance to the region's surface.

    Either on the voxel grid (``smoothed``, flat, with an optional flat curvature shift)
    or, for a wide smoothing, as a signed-distance grid ``coarse`` whose cells are blocks
    of ``factor`` voxels, read by trilinear interpolation.
    """

    sigma_mm: float
    shape: tuple[int, int, int]
    smoothed: np.ndarray | None = None  # float32, flat, voxel grid
    curvature_shift: np.ndarray | None = None  # float32 mm, flat; None: not corrected
    coarse: np.ndarray | None = None  # float32 mm, signed distance on the block grid
    factor: np.ndarray | None = None  # voxels per block along each axis

    def distance(self, at: np.ndarray) -> np.ndarray:
        """Signed distance in mm (positive inside the region) at flat indices ``at``: the
        probit of the smoothed indicator, which is exact for a plane, less the shift
        of a curved surface's smoothed 0.5 level."""
        if self.coarse is not None:
            index = np.array(np.unravel_index(at, self.shape), dtype=np.float64)
            position = (index - (self.factor[:, None] - 1) / 2) / self.factor[:, None]
            return ndimage.map_coordinates(self.coarse, position, order=1, mode="nearest")
        shift = None if self.curvature_shift is None else self.curvature_shift[at]
        return _probit_distance(self.smoothed[at], self.sigma_mm, shift)

    def gradient(self, at: np.ndarray, spacing: np.ndarray) -> np.ndarray:
        """``(n, 3)`` central differences (per mm) of the voxel-grid smoothed indicator at
        flat indices ``at`` (one-sided at the array faces)."""
        index = np.array(np.unravel_index(at, self.shape))
        out = np.empty((at.size, 3))
        for axis, (n, h) in enumerate(zip(self.shape, spacing, strict=True)):
            step = int(np.prod(self.shape[axis + 1 :]))
            up = np.where(index[axis] < n - 1, at + step, at)
            down = np.where(index[axis] > 0, at - step, at)
            reach = (up - down) // step * h
            out[:, axis] = (self.smoothed[up] - self.smoothed[down]) / np.maximum(reach, 1e-12)
        return out


def _probit_distance(smoothed: np.ndarray, sigma_mm: float, shift: np.ndarray | None) -> np.ndarray:
    """Signed distance in mm from smoothed indicator values: ``sigma * Phi^-1(f)`` (exact
    for a plane) less the curvature shift of the smoothed 0.5 level, if given."""
    f = np.clip(smoothed.astype(np.float64), _PROBIT_CLIP, 1.0 - _PROBIT_CLIP)
    d = sigma_mm * ndtri(f)
    return d if shift is None else d - shift


def _block_mean(region: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Mean of ``region`` over blocks of ``factor`` voxels (the array edge-padded to whole
    blocks): the fraction of each block inside the region."""
    padded = np.pad(
        region, [(0, -n % k) for n, k in zip(region.shape, factor, strict=True)], "edge"
    )
    blocks = padded.reshape(
        [v for n, k in zip(padded.shape, factor, strict=True) for v in (n // k, k)]
    )
    return blocks.mean(axis=(1, 3, 5), dtype=np.float32)


def _surface_field(
    region: np.ndarray, spacing: np.ndarray, sigma_mm: float, *, curvature: bool
) -> _SurfaceField:
    """`_SurfaceField` of ``region`` at ``sigma_mm`` (isotropic in mm).

    A smoothing wider than three voxels is computed on blocks of voxels at most
    ``sigma / 3`` across (the block mean widens the Gaussian by under 1 %), which keeps a
    6 mm smoothing of a 0.4 mm CT as cheap as a 1.5-voxel one.

    The curvature shift is ``sigma^2 / 2 * div(grad f / |grad f|)`` of the smoothed
    indicator ``f``: to first order in ``sigma`` the 0.5 level of a smoothed surface
    with mean curvature ``H`` lies ``sigma^2 H`` towards the centre of curvature (a ball
    of radius R shrinks to ``R - sigma^2 / R``).
    """
    factor = np.maximum(1, np.floor(sigma_mm / (3 * spacing))).astype(int)
    blocked = bool((factor > 1).any())
    indicator = _block_mean(region, factor) if blocked else region.astype(np.float32)
    step = spacing * factor
    smoothed = ndimage.gaussian_filter(indicator, sigma_mm / step, mode="nearest")
    shift = None
    if curvature:
        gradient = np.gradient(smoothed, *step)
        norm = np.sqrt(sum(g * g for g in gradient)) + np.float32(1e-12)
        divergence = sum(
            np.gradient(g / norm, h, axis=axis)
            for axis, (g, h) in enumerate(zip(gradient, step, strict=True))
        )
        shift = np.float32(0.5 * sigma_mm**2) * divergence
    if not blocked:
        return _SurfaceField(
            sigma_mm, region.shape, smoothed.ravel(), None if shift is None else shift.ravel()
        )
    distance = _probit_distance(smoothed, sigma_mm, shift)
    return _SurfaceField(sigma_mm, region.shape, coarse=distance.astype(np.float32), factor=factor)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every True voxel of ``mask``; None if there is none."""
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if present.size == 0:
            return None
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def _fields(
    regions: dict[int, np.ndarray], spacing: np.ndarray, sigma_mm: float, *, curvature: bool
) -> dict[int, _SurfaceField]:
    """`_surface_field` of each region, two at a time (the filters release the GIL)."""
    with ThreadPoolExecutor(2) as pool:
        futures = {
            b: pool.submit(_surface_field, region, spacing, sigma_mm, curvature=curvature)
            for b, region in regions.items()
        }
    return {b: future.result() for b, future in futures.items()}


def _crossing(field: _SurfaceField, here: np.ndarray, there: np.ndarray) -> np.ndarray:
    """Fraction of the way from ``here`` (outside the region) to ``there`` (inside) where
    the surface lies, by linear interpolation of the signed distance (not clipped to the
    link: `_surface_links` clips once, after the fits)."""
    d_here, d_there = field.distance(here), field.distance(there)
    denom = d_here - d_there
    return np.where(np.abs(denom) > 1e-9, d_here / np.where(denom == 0, 1, denom), 0.5)


def _fitted_crossings(
    region: np.ndarray,
    normals: _SurfaceField,
    spacing: np.ndarray,
    here: np.ndarray,
    there: np.ndarray,
    smoothed: np.ndarray,
    coarse_axis: int | None,
) -> np.ndarray:
    """`surface_fit.fitted_crossings` of links from ``here`` (outside ``region``) to
    ``there`` (inside), with the normals of ``normals`` (a voxel-grid field), where the
    fit applies; ``smoothed`` (the smoothing's crossings) elsewhere. With coarse slices
    across ``coarse_axis`` (in-plane links) the fit applies to every link from a slice
    ratio of `_FIT_EVERY_IN_PLANE_LINK`, below it to those on caps."""
    gradient = normals.gradient(here, spacing) + normals.gradient(there, spacing)
    out = smoothed.copy()
    fit = np.ones(here.size, dtype=bool)
    if coarse_axis is not None and spacing[coarse_axis] < _FIT_EVERY_IN_PLANE_LINK * spacing.min():
        steep = np.abs(gradient[:, coarse_axis])
        fit = steep > _FIT_CAP_NORMAL * np.linalg.norm(gradient, axis=1)
    out[fit] = fitted_crossings(
        region, spacing, here[fit], there[fit], gradient[fit], smoothed[fit],
        ISOTROPIC if coarse_axis is None else COARSE_SLICES,
    )  # fmt: skip
    return out


def _under_summit(terrace: np.ndarray, here: np.ndarray, there: np.ndarray) -> np.ndarray:
    """Which slice-axis links (``here`` outside the region, ``there`` inside, in the next
    slice) lie on a terrace too wide for the slice smoothing: half the in-plane distance
    between the region's contours in the two slices, or 1.5 times the distance to the
    contour of ``there``'s slice where ``here``'s slice has none of the region nearby (a
    summit), above `_SLICE_SMOOTHING_MM`."""
    inside, outside = terrace[there], terrace[here]
    width = np.where(outside >= _NO_CONTOUR, 1.5 * inside, 0.5 * (inside + outside))
    return width > _SLICE_SMOOTHING_MM


def _in_plane_distance(region: np.ndarray, spacing: np.ndarray, axis: int) -> np.ndarray:
    """Flat distance (mm) from every voxel to the nearest voxel of the other kind (in or
    out of ``region``) in its own slice across ``axis``; at least `_NO_CONTOUR` where the
    slice has none.

    One 3D transform (``edt``, the two kinds as two labels) with the slice step set to
    `_NO_CONTOUR`: a voxel in another slice is then always farther than any in its own."""
    anisotropy = spacing.copy()
    anisotropy[axis] = _NO_CONTOUR
    labels = region.astype(np.uint8) + 1
    return edt.edt(
        labels, anisotropy=tuple(anisotropy), black_border=False, parallel=numba.get_num_threads()
    ).ravel()


@dataclass
class _Links:
    """The six face neighbours of every wall cell, as ``(n, 6)`` arrays (axis-major,
    step -1 then +1): neighbour cell number (-1 if not wall), kind (0 wall, 1 inner
    boundary, 2 outer boundary, 3 array edge) and distance in mm to the value used
    (a wall centre one spacing away, or the sub-voxel surface)."""

    cell: np.ndarray
    kind: np.ndarray
    distance: np.ndarray

    AXIS = np.repeat(np.arange(3), 2)  # axis of each of the six columns


@numba.njit(cache=True, parallel=True, nogil=True)
def _face_neighbours(cells, shape, flat_wall, flat_inner):  # pragma: no cover (compiled)
    """Flat index, kind and cell number (`_Links`) of the six face neighbours of every
    cell of a C-order array of ``shape``; at an array edge the cell itself, of kind 3."""
    strides = (shape[1] * shape[2], shape[2], 1)
    number = np.empty(flat_wall.size, dtype=np.int64)
    for i in numba.prange(cells.size):
        number[cells[i]] = i
    neighbour = np.empty((cells.size, 6), dtype=np.int64)
    kind = np.empty((cells.size, 6), dtype=np.int8)
    cell = np.full((cells.size, 6), -1, dtype=np.int64)
    for i in numba.prange(cells.size):
        c = cells[i]
        for axis in range(3):
            position = (c // strides[axis]) % shape[axis]
            for side in range(2):
                column = 2 * axis + side
                step = 2 * side - 1
                if not 0 <= position + step < shape[axis]:
                    neighbour[i, column], kind[i, column] = c, 3
                    continue
                nb = c + step * strides[axis]
                neighbour[i, column] = nb
                if flat_wall[nb]:
                    kind[i, column], cell[i, column] = 0, number[nb]
                else:
                    kind[i, column] = 1 if flat_inner[nb] else 2
    return neighbour, kind, cell


def wall_thickness(
    labels: np.ndarray,
    spacing,
    *,
    inner: int = 1,
    wall: int = 2,
    smoothing_voxels: float = 1.5,
    surfaces: Surfaces | str = Surfaces.FITTED,
    tolerance: float = 1e-5,
    device: str | None = None,
) -> ThicknessResult:
    """Thickness (mm) of the ``wall`` label between ``inner`` and everything else.

    Args:
        labels: ``(X, Y, Z)`` integer label map (1 blood pool, 2 myocardium by default).
        spacing: voxel size in mm along X, Y, Z.
        smoothing_voxels: Gaussian sigma (in voxels of the finest axis, the same in mm
            along every axis) of the indicator smoothing that places the surfaces at
            sub-voxel positions. Larger resolves shallow staircases better but shifts
            curved surfaces towards their centre of curvature by about ``sigma^2``
            times the mean curvature; 1.5 balances the two on the analytic phantoms.
            Used where the spacing is (nearly) isotropic; with coarse slices the
            smoothing is wider and curvature-corrected (module docstring).
        surfaces: `Surfaces`: ``"fitted"`` (default) fits each surface locally to its
            staircase (:mod:`sitetune.measure.surface_fit`; with coarse slices, the
            in-plane links only), which meets the accuracy targets at every tested
            centre offset; ``"smoothed"`` places them by the smoothing alone, which is
            faster (about 0.6 of the time at 256^3) and misses the max target at some
            offsets (module docstring).
        tolerance: relative residual of the Laplace solve.
        device: None for the numpy/scipy solvers; ``"cpu"``, ``"cuda"`` or ``"cuda:N"``
            to solve the Laplace and path-length systems with torch on that device
            (the systems are assembled the same way; results agree to float32 round-off).

    Raises:
        InvalidInput: no wall voxels, or no inner region touching the wall.
        ValueError: a malformed label map or spacing, or a device torch cannot use.
    """
    started = time.perf_counter()
    labels = np.asarray(labels)
    spacing = np.asarray(spacing, dtype=np.float64)
    if labels.ndim != 3 or spacing.shape != (3,):
        raise ValueError(f"need a 3D label map and 3 spacings, got {labels.shape}, {spacing}")
    try:
        surfaces = Surfaces(surfaces)
    except ValueError:
        allowed = ", ".join(repr(s.value) for s in Surfaces)
        raise ValueError(f"surfaces must be one of {allowed}, got {surfaces!r}") from None
    torch_device = None  # None: numpy/scipy solvers
    if device is not None:
        from sitetune.measure.thickness_torch import resolve_device

        torch_device = resolve_device(device)
    wall_box = _bounding_box(labels == wall)
    if wall_box is None:
        raise InvalidInput(f"the mask has no myocardium (label {wall})", code="no_myocardium")
    if not (labels == inner).any():
        raise InvalidInput(f"the mask has no blood pool (label {inner})", code="no_blood_pool")
    # Work in the wall's bounding box, with a margin for the smoothing and the neighbours.
    coarse_axis = int(np.argmax(spacing))
    coarse = spacing[coarse_axis] > _ANISOTROPY * spacing.min()
    widest_mm = _SUMMIT_SMOOTHING_MM if coarse else smoothing_voxels * spacing.min()
    margin = int(np.ceil(3 * widest_mm / spacing.min())) + 2
    box = tuple(
        slice(max(b.start - margin, 0), min(b.stop + margin, n))
        for b, n in zip(wall_box, labels.shape, strict=True)
    )
    sub = labels[box]
    cells, links, on_surface = _surface_links(
        sub, spacing, inner, wall, coarse_axis if coarse else None, smoothing_voxels,
        fitted=surfaces is Surfaces.FITTED,
    )  # fmt: skip
    n = cells.size
    placed = time.perf_counter()
    u, iterations = _solve_laplace(links, spacing, tolerance, torch_device)
    solved = time.perf_counter()
    tangent = _unit_gradient(u, links.cell, links.kind, links.distance)
    tangent = _surface_cell_tangents(tangent, links.cell, links.kind, on_surface)
    order = np.argsort(u)
    (l0, sweeps0), (l1, sweeps1) = _path_lengths(tangent, links, order, torch_device)
    traced = time.perf_counter()
    values = (l0 + l1).astype(np.float32)
    out = np.zeros(labels.shape, dtype=np.float32)
    out_sub = np.zeros(sub.size, dtype=np.float32)
    out_sub[cells] = values
    out[box] = out_sub.reshape(sub.shape)
    method = {
        "name": "laplace-yezzi",
        "boundaries": "sub-voxel (probit of a smoothed indicator)",
        "smoothing_voxels": smoothing_voxels,
        "surfaces": surfaces.value,
        "coarse_slices": None,
        "laplace_solver": "jacobi-preconditioned conjugate gradients (float32, matrix-free, numba)",
        "laplace_tolerance": tolerance,
        "laplace_iterations": iterations,
        "path_lengths": "upwind, one pass per surface in order of the potential (numba)",
        "backend": "scipy",
        "device": "cpu",
        "wall_voxels": int(n),
    }
    if coarse:
        method["boundaries"] += ", curvature-corrected"
        method["smoothing_voxels"] = None
        method["coarse_slices"] = {
            "axis": coarse_axis,
            "smoothing_mm": _SLICE_SMOOTHING_MM,
            "summit_smoothing_mm": _SUMMIT_SMOOTHING_MM,
        }
    if torch_device is not None:
        method["laplace_solver"] += f" (torch {torch_device})"
        method["path_lengths"] = (
            f"upwind, Jacobi sweeps of the triangular system (torch {torch_device})"
        )
        method["path_sweeps"] = [sweeps0, sweeps1]
        method["backend"], method["device"] = "torch", str(torch_device)
    method["seconds"] = round(time.perf_counter() - started, 3)
    method["stage_seconds"] = {
        "surfaces": round(placed - started, 3),
        "laplace": round(solved - placed, 3),
        "path_lengths": round(traced - solved, 3),
    }
    return ThicknessResult(out, _summary(values), method)


def _surface_links(
    sub: np.ndarray,
    spacing: np.ndarray,
    inner: int,
    wall: int,
    coarse_axis: int | None,
    smoothing_voxels: float,
    *,
    fitted: bool,
) -> tuple[np.ndarray, _Links, np.ndarray]:
    """The wall cells of the label map ``sub`` (flat indices), their `_Links`, the
    surfaces placed between voxel centres by the smoothing and, if ``fitted``, by the fits
    (module docstring), and which cells a surface passes through (placed at the closest
    allowed distance, `_CLOSEST_SURFACE`, on some face); ``coarse_axis`` is the slice
    axis, None at near-isotropic spacing."""
    coarse = coarse_axis is not None
    is_wall, is_inner = sub == wall, sub == inner
    regions = {1: is_inner, 2: ~is_inner & ~is_wall}
    if coarse:
        fields = _fields(regions, spacing, _SLICE_SMOOTHING_MM, curvature=True)
        summit_fields = _fields(regions, spacing, _SUMMIT_SMOOTHING_MM, curvature=True)
        terraces = {b: _in_plane_distance(r, spacing, coarse_axis) for b, r in regions.items()}
    else:
        fields = _fields(regions, spacing, smoothing_voxels * spacing.min(), curvature=False)
    flat_inner, flat_wall = is_inner.ravel(), is_wall.ravel()
    cells = np.flatnonzero(flat_wall)
    neighbour, kind, cell = _face_neighbours(cells, np.array(sub.shape), flat_wall, flat_inner)
    # the links that cross a surface, in row-major (cell, column) order
    rows, columns = np.nonzero((kind == 1) | (kind == 2))
    link_kind, here, there = kind[rows, columns], cells[rows], neighbour[rows, columns]
    crossing = np.empty(rows.size)
    for boundary, surface in fields.items():
        at = link_kind == boundary
        crossing[at] = _crossing(surface, here[at], there[at])
        if coarse:
            summit = np.flatnonzero(at & (_Links.AXIS[columns] == coarse_axis))
            summit = summit[_under_summit(terraces[boundary], here[summit], there[summit])]
            crossing[summit] = _crossing(summit_fields[boundary], here[summit], there[summit])
    if fitted:
        normal_fields = fields
        if coarse:  # normals from the fine smoothing (on the voxel grid)
            sigma_mm = smoothing_voxels * spacing.min()
            normal_fields = _fields(regions, spacing, sigma_mm, curvature=False)
        for boundary, normals in normal_fields.items():
            at = link_kind == boundary
            if coarse:  # per in-plane column; the slice-axis links keep the summit smoothing
                link_sets = [at & (columns == c) for c in range(6) if _Links.AXIS[c] != coarse_axis]
            else:  # one fit per block and height axis for the links of all six columns
                link_sets = [at]
            for links_here in link_sets:
                crossing[links_here] = _fitted_crossings(
                    regions[boundary], normals, spacing, here[links_here], there[links_here],
                    crossing[links_here], coarse_axis,
                )  # fmt: skip
    theta = np.ones((cells.size, 6))
    closest = _CLOSEST_SURFACE * spacing.max() / spacing[_Links.AXIS[columns]]
    theta[rows, columns] = np.clip(crossing, closest, 1.0)
    on_surface = np.zeros(cells.size, dtype=bool)
    on_surface[rows[crossing <= closest]] = True
    return cells, _Links(cell, kind, theta * spacing[_Links.AXIS]), on_surface


def _solve_laplace(
    links: _Links, spacing: np.ndarray, tolerance: float, device: torch.device | None = None
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
class _LaplaceSystem:
    """The finite-volume Laplace system ``A u = rhs`` on the wall cells, matrix-free:
    ``A_ii = diagonal_i`` and ``A_ij = -conductance[axis]`` for a wall neighbour ``j``
    across a face on ``axis``; all float32.

    A face to a wall neighbour conducts ``area / spacing``, a face on a surface ``area /
    distance`` to the sub-voxel boundary value (0 inner, 1 outer), which enters ``rhs``.
    Float32: the solve is memory-bound and u in [0, 1] needs no more than float32's 7
    digits at the tolerance. The wall neighbours are bit ``f`` of ``faces`` for `_Links`
    column ``f``; along the last (fastest) axis they are cells ``i - 1`` and ``i + 1``
    (cells are numbered in C order), along the first two their numbers are in ``across``
    (``(n, 4)``, the cell itself where there is none).
    """

    across: np.ndarray
    faces: np.ndarray
    diagonal: np.ndarray
    conductance: np.ndarray
    rhs: np.ndarray


def _laplace_system(links: _Links, spacing: np.ndarray) -> _LaplaceSystem:
    """Assemble `_LaplaceSystem` from the links."""
    area = (np.prod(spacing) / spacing)[_Links.AXIS]  # face area of each column
    conductance = area / spacing[_Links.AXIS]
    across, faces, diagonal, rhs = _laplace_arrays(
        links.cell, links.kind, links.distance, area, conductance
    )
    return _LaplaceSystem(across, faces, diagonal, conductance[::2].astype(np.float32), rhs)


@numba.njit(cache=True, parallel=True, nogil=True)
def _laplace_arrays(cell, kind, distance, area, conductance):  # pragma: no cover (compiled)
    """``(across, faces, diagonal, rhs)`` of `_LaplaceSystem`."""
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


def _pcg(system: _LaplaceSystem, x: np.ndarray, tolerance: float) -> tuple[np.ndarray, int]:
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
    """Row ``i`` of `_LaplaceSystem`'s matrix times ``p``."""
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


@numba.njit(cache=True, parallel=True, nogil=True)
def _unit_gradient(u, cell, kind, distance):  # pragma: no cover (compiled)
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
def _surface_cell_tangents(tangent, cell, kind, on_surface):  # pragma: no cover (compiled)
    """``tangent`` with the cells a surface passes through (``on_surface``, from
    `_surface_links`) given the mean direction of their other wall neighbours' tangents.

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


def _path_lengths(
    tangent: np.ndarray, links: _Links, order: np.ndarray, device: torch.device | None
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
