"""Analytic wall-thickness phantoms with exact thickness.

Each phantom is a label map (1 "blood pool" inside, 2 wall, 0 outside) sampled at voxel
centres from exact surfaces, whose true Laplace thickness is known in closed form:
spherical and cylindrical shells (field lines radial: thickness = outer - inner radius)
and slabs between parallel planes (thickness = plane distance) at any orientation; and
an LV whose thickness is a known plateau in each AHA segment (`lv_segment_phantom`).
Centres carry sub-voxel offsets so boundaries fall at arbitrary positions between
voxel centres. ``valid`` marks the wall voxels where the closed form holds (slabs: away
from the array faces, where the finite box bends the field lines).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sitetune.imaging.volume import Volume


@dataclass
class ThicknessPhantom:
    """A label map with its exact wall thickness in mm."""

    labels: Volume  # uint8 (X, Y, Z): 0 outside, 1 inside, 2 wall
    thickness_mm: float
    valid: np.ndarray  # bool (X, Y, Z): wall voxels where thickness_mm is the exact answer
    description: dict


def _grid(
    shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel-centre coordinates in mm (origin at voxel 0) and the matching affine."""
    affine = np.diag([*spacing, 1.0])
    axes = [np.arange(n, dtype=np.float64) * s for n, s in zip(shape, spacing, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1), affine


def _shape_for(extent_mm: float, spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(int(np.ceil(extent_mm / s)) + 1 for s in spacing)


def _face_distance(shape: tuple[int, int, int], spacing) -> np.ndarray:
    """Distance in mm from every voxel centre to the nearest array face."""
    axes = [
        np.minimum(np.arange(n), n - 1 - np.arange(n)) * s
        for n, s in zip(shape, spacing, strict=True)
    ]
    return np.minimum.reduce(np.meshgrid(*axes, indexing="ij"))


def _labels(inside: np.ndarray, wall: np.ndarray) -> np.ndarray:
    out = np.zeros(inside.shape, dtype=np.uint8)
    out[wall] = 2
    out[inside] = 1
    return out


def spherical_shell(
    r_inner: float,
    r_outer: float,
    spacing=(1.0, 1.0, 1.0),
    *,
    rng: np.random.Generator | None = None,
    margin_mm: float = 4.0,
) -> ThicknessPhantom:
    """A spherical shell of radii ``r_inner < r_outer`` mm, centre offset randomly in a voxel."""
    if not 0 < r_inner < r_outer:
        raise ValueError(f"need 0 < r_inner < r_outer, got {r_inner}, {r_outer}")
    rng = rng or np.random.default_rng(0)
    shape = _shape_for(2 * (r_outer + margin_mm), spacing)
    points, affine = _grid(shape, spacing)
    centre = (np.asarray(shape) - 1) / 2 * spacing + rng.uniform(-0.5, 0.5, 3) * spacing
    r = np.linalg.norm(points - centre, axis=-1)
    labels = _labels(r < r_inner, (r >= r_inner) & (r < r_outer))
    return ThicknessPhantom(
        Volume(labels, affine),
        r_outer - r_inner,
        labels == 2,
        {
            "kind": "sphere",
            "r_inner": r_inner,
            "r_outer": r_outer,
            "spacing": list(spacing),
            "centre_mm": centre.tolist(),
        },
    )


def cylindrical_shell(
    r_inner: float,
    r_outer: float,
    spacing=(1.0, 1.0, 1.0),
    *,
    axis=(0.0, 0.0, 1.0),
    length_mm: float | None = None,
    rng: np.random.Generator | None = None,
    margin_mm: float = 4.0,
) -> ThicknessPhantom:
    """A cylindrical shell around ``axis`` through the (offset) centre, spanning the array.

    The cylinder runs through the whole array, so it is cut by array faces. Where a face
    is not perpendicular to the axis the cut bends the field lines, so ``valid`` keeps
    wall voxels farther than the wall thickness plus two voxels from every array face
    (and, for an axis-aligned cylinder, also those near its own end faces).
    """
    if not 0 < r_inner < r_outer:
        raise ValueError(f"need 0 < r_inner < r_outer, got {r_inner}, {r_outer}")
    rng = rng or np.random.default_rng(0)
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    length_mm = length_mm or 2 * (r_outer + margin_mm)
    shape = _shape_for(max(2 * (r_outer + margin_mm), length_mm), spacing)
    points, affine = _grid(shape, spacing)
    centre = (np.asarray(shape) - 1) / 2 * spacing + rng.uniform(-0.5, 0.5, 3) * spacing
    d = points - centre
    along = d @ axis
    r = np.linalg.norm(d - along[..., None] * axis, axis=-1)
    labels = _labels(r < r_inner, (r >= r_inner) & (r < r_outer))
    aligned = np.count_nonzero(np.abs(axis) > 1e-9) == 1
    if aligned:
        half = (np.asarray(shape) - 1) * spacing / 2
        reach = np.min(half / np.maximum(np.abs(axis), 1e-9))  # where the axis exits
        valid = (labels == 2) & (np.abs(along) < reach - r_outer)
    else:
        valid = (labels == 2) & (
            _face_distance(shape, spacing) > r_outer - r_inner + 2 * max(spacing)
        )
    return ThicknessPhantom(
        Volume(labels, affine),
        r_outer - r_inner,
        valid,
        {
            "kind": "cylinder",
            "r_inner": r_inner,
            "r_outer": r_outer,
            "axis": axis.tolist(),
            "spacing": list(spacing),
            "centre_mm": centre.tolist(),
        },
    )


def slab(
    thickness: float,
    normal=(1.0, 0.0, 0.0),
    spacing=(1.0, 1.0, 1.0),
    *,
    extent_mm: float = 48.0,
    rng: np.random.Generator | None = None,
) -> ThicknessPhantom:
    """A wall between two planes ``thickness`` mm apart with unit ``normal``.

    Label 1 lies on the side the normal points away from, label 0 beyond the wall.
    ``valid`` keeps wall voxels farther than ``thickness + 2`` voxels from every array face.
    """
    if thickness <= 0:
        raise ValueError(f"thickness must be > 0, got {thickness}")
    rng = rng or np.random.default_rng(0)
    normal = np.asarray(normal, dtype=np.float64) / np.linalg.norm(normal)
    shape = _shape_for(extent_mm, spacing)
    points, affine = _grid(shape, spacing)
    centre = (np.asarray(shape) - 1) / 2 * spacing + rng.uniform(-0.5, 0.5, 3) * spacing
    s = (points - centre) @ normal + thickness / 2
    labels = _labels(s < 0, (s >= 0) & (s < thickness))
    valid = (labels == 2) & (_face_distance(shape, spacing) > thickness + 2 * max(spacing))
    return ThicknessPhantom(
        Volume(labels, affine),
        thickness,
        valid,
        {
            "kind": "slab",
            "thickness": thickness,
            "normal": normal.tolist(),
            "spacing": list(spacing),
            "centre_mm": centre.tolist(),
        },
    )


# --- An LV with a known wall thickness in every AHA segment -------------------------------

AHA_PHANTOM_THICKNESS_MM = {  # the plateau in each AHA segment's core (Cerqueira 2002 ids)
    **{1: 9.0, 2: 10.5, 3: 11.5, 4: 9.5, 5: 8.0, 6: 7.0},  # basal
    **{7: 8.0, 8: 9.5, 9: 10.5, 10: 8.5, 11: 7.0, 12: 6.0},  # mid-cavity
    **{13: 7.0, 14: 8.5, 15: 7.5, 16: 6.0, 17: 5.0},  # apical, apex
}
_SECTOR_BLEND_DEG = 5.0  # half-width of the smooth step between two sectors
_LEVEL_BLEND_MM = 2.5  # half-width of the step between two levels (basal / mid / apical)
_APEX_BLEND_DEG = 15.0  # polar angles over which the cap meets the apical ring
_RV_SECTOR_DEG = (30.0, 150.0)  # the RV beside the septum, between its two insertions
_RV_DEPTH_MM = 8.0


@dataclass
class LvSegmentPhantom:
    """An LV label map whose wall thickness is known in every AHA segment.

    Directions are unit vectors in world mm (the affine's frame). Angles around the long
    axis run from ``anterior`` (0) towards ``septal`` (+90 deg).
    """

    labels: Volume  # uint8 (X, Y, Z): 0 outside, 1 blood pool, 2 myocardium
    rv: np.ndarray  # bool (X, Y, Z): an RV beside the septum (label 0 in ``labels``)
    segments: np.ndarray  # uint8 (X, Y, Z): the true AHA segment 1..17 of each wall voxel
    wall_mm: np.ndarray  # float32 (X, Y, Z): the exact local wall thickness, NaN off the wall
    thickness_mm: dict[int, float]  # segment id -> the thickness of its core (its median)
    base: np.ndarray  # the base centre: the long axis meets the (open) base plane
    cavity_apex: np.ndarray  # the apical end of the cavity on the long axis
    apex: np.ndarray  # the epicardial apex on the long axis
    long_axis: np.ndarray  # apex -> base
    anterior: np.ndarray  # the centre of the anterior segments 1, 7, 13
    septal: np.ndarray  # the centre of the septum, towards the RV (between segments 2|3, 8|9, 14)
    description: dict


def _smooth_step(x: np.ndarray) -> np.ndarray:
    """0 for ``x <= -1``, 1 for ``x >= 1``, C1-smooth between, and ``s(x) + s(-x) == 1``."""
    u = np.clip((x + 1.0) / 2.0, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _sector_weights(theta_deg: np.ndarray, n: int) -> list[np.ndarray]:
    """A partition of unity over ``n`` equal sectors centred at ``360 / n * k`` degrees."""
    half = 180.0 / n
    weights = []
    for k in range(n):
        off = np.abs((theta_deg - 360.0 / n * k + 180.0) % 360.0 - 180.0)
        weights.append(_smooth_step((half - off) / _SECTOR_BLEND_DEG))
    return weights


def _lv_frame(long_axis, anterior, right) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    axis = np.asarray(long_axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    front = np.asarray(anterior, dtype=np.float64)
    front = front - (front @ axis) * axis
    if np.linalg.norm(front) < 0.1:
        raise ValueError(f"anterior {anterior} is (nearly) parallel to long_axis {long_axis}")
    front /= np.linalg.norm(front)
    septal = np.cross(axis, front)
    side = float(septal @ np.asarray(right, dtype=np.float64))
    if abs(side) < 0.05:
        raise ValueError(f"right {right} does not say which side of the LV the septum is on")
    return axis, front, septal * np.sign(side)


def _aha_truth(h: np.ndarray, theta_deg: np.ndarray, cavity_mm: float) -> np.ndarray:
    """AHA segment ids from the height ``h`` above the base plane (<= 0) and the angle."""
    up = h + cavity_mm  # height above the cavity's apical end
    basal_mid = np.floor(((theta_deg + 30.0) % 360.0) / 60.0).astype(np.uint8) + 1
    apical = np.floor(((theta_deg + 45.0) % 360.0) / 90.0).astype(np.uint8) + 13
    out = np.where(up >= 2 * cavity_mm / 3, basal_mid, basal_mid + 6).astype(np.uint8)
    out = np.where(up < cavity_mm / 3, apical, out)
    return np.where(up < 0, np.uint8(17), out).astype(np.uint8)


def _segment_thickness(thickness, theta, foot_h, polar, cavity_mm, radius) -> np.ndarray:
    """Wall thickness read at the foot point on the cavity surface: the plateau of each
    segment, blended between levels by the foot's height and, near the apex, towards
    the cap's by the polar angle (out to where the cap meets the cavity's apical end)."""
    basal = _smooth_step((foot_h + cavity_mm / 3) / _LEVEL_BLEND_MM)
    apical = 1.0 - _smooth_step((foot_h + 2 * cavity_mm / 3) / _LEVEL_BLEND_MM)
    lo = np.degrees(np.arccos(radius / (radius + thickness[17]))) + 1.0
    cap = 1.0 - _smooth_step((2 * (polar - lo) - _APEX_BLEND_DEG) / _APEX_BLEND_DEG)
    six, four = _sector_weights(theta, 6), _sector_weights(theta, 4)
    ring = sum(w * (basal * thickness[k + 1] + (1 - basal - apical) * thickness[k + 7])
               for k, w in enumerate(six))  # fmt: skip
    ring = ring + apical * sum(w * thickness[k + 13] for k, w in enumerate(four))
    return (1.0 - cap) * ring + cap * thickness[17]


def _oriented_grid(step: np.ndarray, corners: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """World mm of the voxel centres ``(X, Y, Z, 3)`` of a grid with index steps ``step``
    (columns) covering ``corners``, offset by a random sub-voxel shift, and its affine."""
    index = np.linalg.solve(step, corners.T).T
    first = np.floor(index.min(axis=0)) - 1 + rng.uniform(-0.5, 0.5, 3)
    shape = tuple(int(n) for n in np.ceil(index.max(axis=0) - first) + 2)
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = step, step @ first
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1)
    return grid.astype(np.float64) @ step.T + affine[:3, 3], affine


def lv_segment_phantom(
    spacing=(1.0, 1.0, 1.0),
    *,
    rotation: np.ndarray | None = None,
    long_axis=(0.55, -0.5, 0.6),
    anterior=(0.0, 1.0, 0.0),
    right=(1.0, 0.0, 0.0),
    thickness: dict[int, float] | None = None,
    cavity_radius: float = 13.0,
    cylinder_mm: float = 50.0,
    rng: np.random.Generator | None = None,
    margin_mm: float = 4.0,
) -> LvSegmentPhantom:
    """An LV with a known wall thickness in each of the 17 AHA segments.

    The cavity is a capsule: a cylinder of radius ``cavity_radius`` from the open base
    plane down ``cylinder_mm``, closed by a hemisphere (cavity length ``cylinder_mm +
    cavity_radius``). The myocardium is the normal offset of the cavity surface by a
    thickness that is constant in each segment's core (``thickness``, default
    `AHA_PHANTOM_THICKNESS_MM`) and steps smoothly between neighbours (over +-5 deg
    around the axis, +-2.5 mm along it, 15 deg of polar angle beyond the cap). In
    a core the wall is locally a concentric cylindrical or spherical shell, so its
    Laplace thickness is the plateau; each plateau covers most of its segment, so it is
    the segment's median. (Near the open base the field lines leave through the cut face,
    so the Laplace thickness of the last millimetre there is shorter than ``wall_mm``.)

    Segments follow Cerqueira et al. (Circulation 2002): levels are thirds of the cavity
    length from the base plane, segment 17 is the myocardium beyond the cavity's apical
    end; around the axis the anterior segment is centred on ``anterior`` (world
    anterior projected perpendicular to the axis), and the order runs towards the
    septum, which lies on the patient's ``right`` (the RV side; pass the other side for
    a mirrored heart). ``rv`` is an RV blood pool against the septum between 30 and 150
    deg (its anterior insertion is the boundary of segments 1|2, 7|8).

    Args:
        spacing: voxel size in mm along i, j, k.
        rotation: ``(3, 3)`` orientation of the grid axes in world (an oblique grid:
            ``affine[:3, :3] = rotation @ diag(spacing)``); None for axis-aligned.
        long_axis, anterior, right: world directions (RAS by default): apex -> base,
            anterior, and the patient's right.
    """
    thickness = {**AHA_PHANTOM_THICKNESS_MM, **(thickness or {})}
    if any(t <= 0 for t in thickness.values()) or sorted(thickness) != list(range(1, 18)):
        raise ValueError(f"thickness must give 17 segments > 0 mm, got {thickness}")
    if not 0 < 2 * (cavity_radius + _LEVEL_BLEND_MM) < cylinder_mm:
        raise ValueError(
            f"cylinder_mm must exceed 2 * (cavity_radius + 2.5): the apical third starts in "
            f"the cylinder, got cylinder_mm {cylinder_mm}, cavity_radius {cavity_radius}"
        )
    rng = rng or np.random.default_rng(0)
    axis, front, septal = _lv_frame(long_axis, anterior, right)
    rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    if rotation.shape != (3, 3) or not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-6):
        raise ValueError(f"rotation must be a 3x3 rotation matrix, got {rotation}")
    cavity = cylinder_mm + cavity_radius
    reach = cavity_radius + max(thickness.values()) + _RV_DEPTH_MM + margin_mm
    below = cavity + thickness[17] + margin_mm
    base = np.zeros(3)
    corners = np.array(
        [base + h * axis + x * front + y * septal
         for h in (-below, margin_mm) for x in (-reach, reach) for y in (-reach, reach)]
    )  # fmt: skip
    points, affine = _oriented_grid(rotation @ np.diag(spacing), corners, rng)
    d = points - base
    h, x, y = d @ axis, d @ front, d @ septal
    theta = np.degrees(np.arctan2(y, x))
    r = np.hypot(x, y)
    # The capsule: distance to the cavity surface, the height of the nearest surface point
    # ("foot", where the thickness is read) and the polar angle from the apex (cap only).
    in_cap = h < -cylinder_mm
    rho = np.sqrt(r**2 + (h + cylinder_mm) ** 2)
    dist = np.where(in_cap, rho - cavity_radius, r - cavity_radius)
    cos_polar = np.clip(-(h + cylinder_mm) / np.maximum(rho, 1e-9), -1.0, 1.0)
    foot_h = np.where(in_cap, -cylinder_mm - cavity_radius * cos_polar, h)
    polar = np.where(in_cap, np.degrees(np.arccos(cos_polar)), 90.0)
    t = _segment_thickness(thickness, theta, foot_h, polar, cavity, cavity_radius)
    open_base = h <= 0
    wall = open_base & (dist >= 0) & (dist < t)
    labels = _labels(open_base & (dist < 0), wall)
    start, stop = _RV_SECTOR_DEG
    rv = (
        (h < -1.0) & (h > -0.75 * cavity) & (theta > start) & (theta < stop)
        & (dist >= t) & (dist < t + _RV_DEPTH_MM)
    )  # fmt: skip
    segments = np.where(wall, _aha_truth(h, theta, cavity), 0).astype(np.uint8)
    wall_mm = np.where(wall, t, np.nan).astype(np.float32)
    return LvSegmentPhantom(
        labels=Volume(labels, affine),
        rv=rv,
        segments=segments,
        wall_mm=wall_mm,
        thickness_mm=thickness,
        base=base,
        cavity_apex=base - cavity * axis,
        apex=base - (cavity + thickness[17]) * axis,
        long_axis=axis,
        anterior=front,
        septal=septal,
        description={
            "kind": "lv-aha",
            "spacing": list(spacing),
            "rotation": rotation.tolist(),
            "cavity_radius": cavity_radius,
            "cylinder_mm": cylinder_mm,
            "cavity_mm": cavity,
            "long_axis": axis.tolist(),
            "anterior": front.tolist(),
            "septal": septal.tolist(),
            "thickness_mm": {str(k): v for k, v in thickness.items()},
            "rv_sector_deg": list(_RV_SECTOR_DEG),
        },
    )
