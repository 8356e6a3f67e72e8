"""Sub-voxel surfaces of the myocardium: where the endocardium and the epicardium cross the
links between a wall voxel's centre and its six face neighbours.

The first stage of `sitetune.measure.thickness.wall_thickness` (whose docstring gives the
method): each crossing is read from the probit of a region's indicator smoothed isotropically
in mm (wider and curvature-corrected over coarse slices, wider still under summits), then, for
``surfaces="fitted"``, refined by :mod:`sitetune.measure.surface_fit`. The result is `Links`:
per wall cell, its neighbours and the distance to each value the Laplace and path-length
equations use.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import edt
import numba
import numpy as np
from scipy import ndimage
from scipy.special import ndtri

from sitetune.measure.surface_fit import COARSE_SLICES, ISOTROPIC, fitted_crossings

# A surface is never placed closer to a wall cell's centre than this fraction of the coarsest
# spacing, the same distance along every axis: a per-axis fraction would put the nearest
# surface twice as far along a slice axis twice as coarse, which tilts grad u (and so the
# path) towards the slices in a cell the surface passes through.
_CLOSEST_SURFACE = 0.05
_PROBIT_CLIP = 1e-7  # keeps the probit of a saturated indicator finite

ANISOTROPY = 1.2  # coarsest / finest spacing above which the slices count as coarse
SLICE_SMOOTHING_MM = 3.0  # smoothing of the surfaces of a volume with coarse slices
SUMMIT_SMOOTHING_MM = 6.0  # ... for slice-axis links under a summit or wide terrace
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
    link: `surface_links` clips once, after the fits)."""
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
    summit), above `SLICE_SMOOTHING_MM`."""
    inside, outside = terrace[there], terrace[here]
    width = np.where(outside >= _NO_CONTOUR, 1.5 * inside, 0.5 * (inside + outside))
    return width > SLICE_SMOOTHING_MM


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
class Links:
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
    """Flat index, kind and cell number (`Links`) of the six face neighbours of every
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


def surface_links(
    sub: np.ndarray,
    spacing: np.ndarray,
    inner: int,
    wall: int,
    coarse_axis: int | None,
    smoothing_voxels: float,
    *,
    fitted: bool,
) -> tuple[np.ndarray, Links, np.ndarray]:
    """The wall cells of the label map ``sub`` (flat indices), their `Links`, the
    surfaces placed between voxel centres by the smoothing and, if ``fitted``, by the
    fits (`sitetune.measure.thickness`'s docstring), and which cells a surface passes
    through (placed at the closest allowed distance, `_CLOSEST_SURFACE`, on some face);
    ``coarse_axis`` is the slice axis, None at near-isotropic spacing."""
    coarse = coarse_axis is not None
    is_wall, is_inner = sub == wall, sub == inner
    regions = {1: is_inner, 2: ~is_inner & ~is_wall}
    if coarse:
        fields = _fields(regions, spacing, SLICE_SMOOTHING_MM, curvature=True)
        summit_fields = _fields(regions, spacing, SUMMIT_SMOOTHING_MM, curvature=True)
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
            summit = np.flatnonzero(at & (Links.AXIS[columns] == coarse_axis))
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
                link_sets = [at & (columns == c) for c in range(6) if Links.AXIS[c] != coarse_axis]
            else:  # one fit per block and height axis for the links of all six columns
                link_sets = [at]
            for links_here in link_sets:
                crossing[links_here] = _fitted_crossings(
                    regions[boundary], normals, spacing, here[links_here], there[links_here],
                    crossing[links_here], coarse_axis,
                )  # fmt: skip
    theta = np.ones((cells.size, 6))
    closest = _CLOSEST_SURFACE * spacing.max() / spacing[Links.AXIS[columns]]
    theta[rows, columns] = np.clip(crossing, closest, 1.0)
    on_surface = np.zeros(cells.size, dtype=bool)
    on_surface[rows[crossing <= closest]] = True
    return cells, Links(cell, kind, theta * spacing[Links.AXIS]), on_surface
