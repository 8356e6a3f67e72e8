"""The AHA 17-segment model of the left ventricle on a label map (Cerqueira et al.,
Circulation 2002): the long axis, the circumferential origin, and a segment id for every
myocardium voxel. Pure geometry on numpy/scipy, in world millimetres through the affine,
so it holds on anisotropic and oblique grids.

Geometry
--------
- **Long axis** (`lv_axis`): a principal direction of the blood pool (label 1) and
  myocardium (label 2) voxel centres in mm -- the one along which the myocardium closes
  one end of the cavity and not the other (the first principal direction for an
  elongated LV; a short, wide one can have a transverse direction first) -- then
  refined to the line through the centroids of the cavity's cross-sections (a least
  squares fit over the middle of the cavity, re-cut perpendicular to the new axis until
  it settles; `_cavity_line`), which a wall thicker on one side does not tilt or
  shift. It points apex -> base; the apex is the end where the myocardium closes over
  the cavity (more myocardium beyond the cavity's end), or, when that does not decide,
  where the cavity tapers (fewer blood-pool voxels in its last fifth).
- **Base plane and cavity apex**: perpendicular to the axis at the basal and apical ends
  of the blood pool: its outermost voxel centres, moved out by the expected gap to the
  surface beyond them (half a slice when the axis runs along a grid axis, next to
  nothing on an oblique grid; `_gap_beyond`).
- **Levels**: basal, mid-cavity and apical thirds of the cavity length from the base
  plane to the cavity apex; segment 17 (apex) is the myocardium beyond the cavity apex,
  the cap. Myocardium above the base plane counts as basal.
- **Around the axis**: the angle runs from ``reference`` (0, the centre of the anterior
  segments 1, 7, 13) towards ``septal`` (+90 deg). Basal and mid: six 60-deg sectors,
  anterior (centred on 0) -> anteroseptal -> inferoseptal -> inferior -> inferolateral
  -> anterolateral; apical: four 90-deg sectors, anterior (centred on 0), septal (90),
  inferior (180), lateral (270).
- **Which way round**: the septum is the wall towards the right ventricle. With an RV
  mask, ``septal`` is the side of the axis the RV touches. Without one it follows from the
  anatomy of a normal (situs solitus) heart in a right-handed world frame (RAS and LPS
  both are): ``septal = reference x long_axis``, which points to the patient's right; seen
  from the apex with anterior up, the septum is then on the left, as in the standard
  short-axis display.
- **Reference direction**: with an RV mask, the anterior RV insertion (the anterior end
  of the arc over which the RV touches the myocardium) is the boundary between segments
  1|2 and 7|8, as the AHA model places it, so ``reference`` is the insertion rotated 30
  deg away from the septum. Without one, the world's anterior direction (``anterior``,
  +y in RAS, the frame of `sitetune.imaging.volume.Volume.affine`) projected
  perpendicular to the long axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from sitetune.errors import InvalidInput
from sitetune.measure.labels import BLOOD_POOL, MYOCARDIUM

__all__ = ["AHA_SEGMENTS", "LvAxis", "assign_segments", "lv_axis", "segment_statistics"]

AHA_SEGMENTS: dict[int, str] = {
    1: "basal anterior",
    2: "basal anteroseptal",
    3: "basal inferoseptal",
    4: "basal inferior",
    5: "basal inferolateral",
    6: "basal anterolateral",
    7: "mid anterior",
    8: "mid anteroseptal",
    9: "mid inferoseptal",
    10: "mid inferior",
    11: "mid inferolateral",
    12: "mid anterolateral",
    13: "apical anterior",
    14: "apical septal",
    15: "apical inferior",
    16: "apical lateral",
    17: "apex",
}

RAS_ANTERIOR = (0.0, 1.0, 0.0)
INSERTION_PERCENTILE = 5.0  # the ends of the RV contact arc, robust to a stray voxel
ROBUST_MAX_PERCENTILE = 98.0  # `segment_statistics` "max"
_LINE_RANGE = (0.25, 0.9)  # of the cavity length from the apex: clear of the apical dome
_REFINEMENTS = 20  # re-fits of the centre line at most (they stop when the axis settles)


@dataclass(frozen=True, eq=False)
class LvAxis:
    """The LV long axis and circumferential origin, in world mm (the affine's frame).

    Points lie on the long axis; directions are unit vectors, ``reference`` and
    ``septal`` perpendicular to ``long_axis`` and to each other.
    """

    apex: np.ndarray  # (3,) the epicardial apex: the apical end of the myocardium
    cavity_apex: np.ndarray  # (3,) the apical end of the cavity: segment 17 lies beyond
    base: np.ndarray  # (3,) the base centre: the axis meets the base plane
    long_axis: np.ndarray  # (3,) apex -> base
    reference: np.ndarray  # (3,) the centre of the anterior segments 1, 7, 13 (angle 0)
    septal: np.ndarray  # (3,) towards the septum (angle +90 deg)
    method: dict = field(default_factory=dict)  # how each was found (JSON-serialisable)

    def __post_init__(self) -> None:
        for name in _VECTORS:
            value = np.array(getattr(self, name), dtype=np.float64)
            if value.shape != (3,) or not np.all(np.isfinite(value)):
                raise ValueError(f"{name} must be 3 finite numbers, got {getattr(self, name)}")
            value.flags.writeable = False
            object.__setattr__(self, name, value)
        frame = np.stack([self.long_axis, self.reference, self.septal])
        if not np.allclose(frame @ frame.T, np.eye(3), atol=1e-6):
            raise ValueError("long_axis, reference and septal must be orthonormal")

    @property
    def cavity_length_mm(self) -> float:
        """Base plane to cavity apex, along the axis: the three levels are its thirds."""
        return float((self.base - self.cavity_apex) @ self.long_axis)

    def to_json(self) -> dict:
        """Points and directions as lists of floats (unrounded, so `from_json` gives back
        the same segment map), the cavity length and ``method``."""
        out = {k: [float(v) for v in getattr(self, k)] for k in _VECTORS}
        return {**out, "cavity_length_mm": self.cavity_length_mm, "method": self.method}

    @classmethod
    def from_json(cls, data: dict) -> LvAxis:
        """The axis `to_json` wrote; rounded directions are re-orthonormalised."""
        vectors = {k: np.asarray(data[k], dtype=np.float64) for k in _VECTORS}
        axis, reference, septal = (vectors[k] for k in ("long_axis", "reference", "septal"))
        frame = np.stack([axis, reference, septal])
        if not np.allclose(frame @ frame.T, np.eye(3), atol=1e-9):
            axis = _unit(axis)
            reference = _unit(reference - (reference @ axis) * axis)
            septal = np.cross(reference, axis) * np.sign(np.cross(reference, axis) @ septal)
        vectors.update(long_axis=axis, reference=reference, septal=septal)
        return cls(**vectors, method=dict(data.get("method", {})))


_VECTORS = ("apex", "cavity_apex", "base", "long_axis", "reference", "septal")


def _check(labels: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    affine = np.asarray(affine, dtype=np.float64)
    if labels.ndim != 3:
        raise ValueError(f"labels must be a 3D label map (X, Y, Z), got shape {labels.shape}")
    if affine.shape != (4, 4) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise ValueError(f"affine must be an invertible 4x4 matrix, got {affine.tolist()}")
    return labels, affine


def _world(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World mm ``(N, 3)`` of the voxel centres where ``mask`` is True."""
    return np.argwhere(mask).astype(np.float64) @ affine[:3, :3].T + affine[:3, 3]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _gap_beyond(values: np.ndarray, depth_mm: float) -> float:
    """How far the surface is expected to lie beyond the highest of ``values``, in mm.

    ``values`` are voxel centres projected on the axis. Near the end they take a set of
    distinct levels; a surface at an unknown position lies in the gap above the highest
    with an expected distance ``sum(g^2) / (2 sum(g))`` over the gaps ``g`` between the
    levels within ``depth_mm`` of the end: half a slice where the axis runs along a grid
    axis (whole slices share one level), next to nothing on an oblique grid.
    """
    levels = np.unique(np.round(values[values >= values.max() - depth_mm], 4))
    gaps = np.diff(levels)
    return 0.0 if gaps.sum() <= 0 else float((gaps**2).sum() / (2 * gaps.sum()))


def _principal_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Principal directions (columns, by decreasing variance) and their variance fractions."""
    centred = points - points.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred / len(points))
    return vectors[:, ::-1], values[::-1] / values.sum()


def _cap_asymmetry(blood: np.ndarray, myo: np.ndarray, axis: np.ndarray) -> tuple[int, int]:
    """Myocardium voxels beyond the cavity's low and high ends along ``axis``."""
    b, m = blood @ axis, myo @ axis
    return int((m < b.min()).sum()), int((m > b.max()).sum())


def _pick_long_axis(blood: np.ndarray, myo: np.ndarray) -> tuple[np.ndarray, dict]:
    """The principal axis of the LV along which the myocardium closes one end of the
    cavity (the apex) and not the other (the open base), oriented apex -> base.

    The first principal direction is the long axis of an elongated LV, but a short, wide
    one (a half-ellipsoid cut near its equator, a dilated ventricle) can have a transverse
    direction first; across the axis there is wall on both sides, so the end asymmetry
    picks the long one.
    """
    vectors, fractions = _principal_axes(np.concatenate([blood, myo]))
    caps = [_cap_asymmetry(blood, myo, vectors[:, i]) for i in range(3)]
    asymmetry = [abs(lo - hi) / max(lo + hi, 1) for lo, hi in caps]
    rank = int(np.argmax(asymmetry))
    axis = vectors[:, rank]
    (lo, hi), rule = caps[rank], "myocardial cap beyond the cavity"
    if max(lo, hi) >= 2 * min(lo, hi) + 10:
        sign = 1.0 if lo > hi else -1.0
    else:  # no clear cap: the apex is where the cavity tapers
        b = blood @ axis
        fifth = (b.max() - b.min()) / 5
        sign = 1.0 if (b < b.min() + fifth).sum() <= (b > b.max() - fifth).sum() else -1.0
        rule = "cavity taper"
    method = {
        "principal_component": rank + 1,
        "explained_variance": [round(float(f), 3) for f in fractions],
        "end_asymmetry": [round(a, 3) for a in asymmetry],
        "apex_end": rule,
    }
    return sign * axis, method


def _cavity_line(
    blood: np.ndarray, axis: np.ndarray, ramp_mm: float
) -> tuple[np.ndarray, np.ndarray, dict]:
    """The centre line of the cavity: (a point on it, its direction), and how it settled.

    The centroid of each thin cross-section perpendicular to ``axis`` lies on the line
    ``centre + s * slope`` fitted by least squares to the blood-pool voxels between 25 and
    90 % of the cavity length from the apex (``axis`` points to the base; weights ramp up
    over ``ramp_mm`` at both ends, so a slice does not flip in or out as the axis
    turns), so the slope
    tilts the axis towards the cavity's own; re-cut along the new axis until it settles.
    For a cylinder the first fit is exact; for an ellipsoid the cross-sections' centres lie
    on the diameter conjugate to them, which converges to the principal axis.
    """
    point, moved, rounds = blood.mean(axis=0), None, 0
    for rounds in range(1, _REFINEMENTS + 1):  # noqa: B007  (reported)
        s = blood @ axis
        lo, hi = s.min(), s.max()
        start, stop = lo + (hi - lo) * np.asarray(_LINE_RANGE)
        w = np.clip((s - start) / ramp_mm, 0, 1) * np.clip((stop - s) / ramp_mm, 0, 1)
        keep = w > 0
        if keep.sum() < 20:
            break
        p, w, s = blood[keep], w[keep], s[keep]
        point = w @ p / w.sum()
        t = s - w @ s / w.sum()
        across = (p - point) - np.outer(t, axis)  # perpendicular offsets
        slope = (w * t) @ across / ((w * t) @ t)  # d(offset)/ds, perpendicular to axis
        direction = _unit(axis + slope)
        moved = float(np.degrees(np.arccos(np.clip(direction @ axis, -1.0, 1.0))))
        axis = direction
        if moved < 0.005:
            break
    settled = {"voxels": int(keep.sum()), "rounds": rounds,
               "last_change_deg": None if moved is None else round(moved, 4)}  # fmt: skip
    return point, axis, settled


def _in_plane(direction: np.ndarray, axis: np.ndarray) -> np.ndarray | None:
    d = np.asarray(direction, dtype=np.float64)
    d = d - (d @ axis) * axis
    n = np.linalg.norm(d)
    return None if n < 1e-6 else d / n


def _rotate(u: np.ndarray, v: np.ndarray, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    return np.cos(a) * u + np.sin(a) * v


def _rv_insertion(
    rv: np.ndarray, myo_mask: np.ndarray, affine: np.ndarray, line, front: np.ndarray
) -> tuple[np.ndarray, bool, dict] | None:
    """The reference direction from where the RV touches the myocardium, whether the RV
    lies on the mirrored side, and what was found; None without contact.

    Angles run around the axis from ``front`` (world anterior, projected) towards the
    side the RV touches. The contact arc's ends are its 5th and 95th percentiles
    extrapolated as for an evenly covered arc; the anterior insertion is the end nearer
    ``front``, the boundary of segments 1|2, so the reference lies 30 deg beyond it.
    """
    point, axis, s_lo, s_hi = line
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    near = ndimage.distance_transform_edt(~myo_mask, sampling=spacing) <= 1.01 * spacing.max()
    contact = _world(rv & near & ~myo_mask, affine)
    if len(contact):
        s = contact @ axis
        contact = contact[(s >= s_lo) & (s <= s_hi)]
    if len(contact) < 5:
        return None
    side = np.cross(front, axis)  # towards the septum in a normal heart (module docstring)
    d = contact - point
    theta = np.arctan2(d @ side, d @ front)
    mean = np.arctan2(np.sin(theta).mean(), np.cos(theta).mean())
    mirrored = bool(mean < 0)
    if mirrored:  # the RV is on the other side: follow it
        side, theta, mean = -side, -theta, -mean
    offset = (theta - mean + np.pi) % (2 * np.pi) - np.pi
    p = INSERTION_PERCENTILE / 100
    a, b = np.percentile(offset, [100 * p, 100 * (1 - p)])
    ends = np.degrees(
        mean + np.array([a - p * (b - a) / (1 - 2 * p), b + p * (b - a) / (1 - 2 * p)])
    )
    insertion = float(min(ends, key=lambda e: abs((e + 180.0) % 360.0 - 180.0)))
    reference = _rotate(front, side, insertion - 30.0)
    found = {
        "voxels": len(contact),
        "insertions_deg": [round(float(e) - insertion + 30.0, 1) for e in ends],
        "septum_deg": round(float(np.degrees(mean)) - insertion + 30.0, 1),
        "anterior_to_reference_deg": round(insertion - 30.0, 1),
    }
    return reference, mirrored, found


def lv_axis(
    labels: np.ndarray,
    affine: np.ndarray,
    rv_mask: np.ndarray | None = None,
    *,
    anterior=RAS_ANTERIOR,
) -> LvAxis:
    """The LV long axis, base plane, cavity apex and circumferential origin.

    Args:
        labels: ``(X, Y, Z)`` label map, 1 LV blood pool, 2 LV myocardium (others ignored).
        affine: ``(4, 4)`` voxel index -> world mm; the result is in this frame.
        rv_mask: optional ``(X, Y, Z)`` bool, the right ventricle (blood pool, or blood
            pool and wall). Its contact with the myocardium gives the septal side and the
            anterior RV insertion (module docstring).
        anterior: the patient's anterior direction in the affine's frame: +y for RAS
            (`Volume.affine`, NIfTI), ``(0, -1, 0)`` for DICOM LPS (`Volume.native_affine`).
            Picks the anterior of the two RV insertions, and is the reference without
            an RV mask.

    Raises:
        InvalidInput: no blood pool or no myocardium.
        ValueError: malformed arrays, or ``anterior`` along the long axis.
    """
    labels, affine = _check(labels, affine)
    if rv_mask is not None and np.shape(rv_mask) != labels.shape:
        raise ValueError(f"rv_mask has shape {np.shape(rv_mask)}, labels {labels.shape}")
    blood_mask, myo_mask = labels == BLOOD_POOL, labels == MYOCARDIUM
    if blood_mask.sum() < 10:
        raise InvalidInput("the mask has no LV blood pool (label 1)", code="no_blood_pool")
    if not myo_mask.any():
        raise InvalidInput("the mask has no LV myocardium (label 2)", code="no_myocardium")
    blood, myo = _world(blood_mask, affine), _world(myo_mask, affine)
    pca, pca_method = _pick_long_axis(blood, myo)  # apex -> base
    coarsest = float(np.linalg.norm(affine[:3, :3], axis=0).max())
    point, axis, settled = _cavity_line(blood, pca, 2.0 * coarsest)
    b, m = blood @ axis, myo @ axis
    depth = 2.01 * coarsest
    s_base = b.max() + _gap_beyond(b, depth)
    s_cavity = b.min() - _gap_beyond(-b, depth)
    s_apex = min(m.min() - _gap_beyond(-m, depth), s_cavity)

    def on_axis(s: float) -> np.ndarray:
        return point + (s - point @ axis) * axis

    front = _in_plane(anterior, axis)
    if front is None:
        raise ValueError(f"anterior {anterior} is parallel to the long axis {axis.round(3)}")
    method = {
        "long_axis": "PCA of blood pool + myocardium voxel centres (mm), refined to the line "
        "through the centroids of the cavity cross-sections",
        **pca_method,
        "pca_to_axis_deg": round(float(np.degrees(np.arccos(min(1.0, pca @ axis)))), 2),
        "refinement": settled,
        "base_plane": "basal end of the blood pool",
        "levels": "thirds of the cavity length, base plane to cavity apex; 17 beyond",
        "anterior": [float(v) for v in anterior],
    }
    reference, mirrored = front, False
    method["reference"] = "anterior direction projected perpendicular to the long axis"
    method["rotation"] = "right-handed anatomy: septal = reference x long_axis (no RV mask)"
    if rv_mask is not None:
        rv = np.asarray(rv_mask, dtype=bool)
        found = _rv_insertion(rv, myo_mask, affine, (point, axis, s_cavity, s_base), front)
        if found is None:
            method["rotation"] += "; the RV mask does not touch the myocardium"
        else:
            reference, mirrored, method["rv_contact"] = found
            method["reference"] = (
                "anterior RV insertion (boundary of segments 1|2), rotated 30 deg from the septum"
            )
            method["rotation"] = "towards the RV: septal is the side the RV mask touches" + (
                " (mirrored: opposite to a normal heart's handedness)" if mirrored else ""
            )
    septal = np.cross(reference, axis) * (-1.0 if mirrored else 1.0)
    return LvAxis(
        apex=on_axis(s_apex),
        cavity_apex=on_axis(s_cavity),
        base=on_axis(s_base),
        long_axis=axis,
        reference=reference,
        septal=septal,
        method=method,
    )


def assign_segments(labels: np.ndarray, affine: np.ndarray, axis: LvAxis) -> np.ndarray:
    """The AHA segment (1..17) of every myocardium voxel, 0 elsewhere.

    Args:
        labels: ``(X, Y, Z)`` label map, 2 LV myocardium.
        affine: ``(4, 4)`` voxel index -> world mm, the frame ``axis`` is in.
        axis: from `lv_axis` (or `LvAxis.from_json`).

    Returns:
        uint8 ``(X, Y, Z)``: levels by the height above the cavity apex in thirds of the
        cavity length (17 below the cavity apex, basal above the base plane too), sectors
        by the angle from ``axis.reference`` towards ``axis.septal`` (module docstring).
    """
    labels, affine = _check(labels, affine)
    myo = labels == MYOCARDIUM
    out = np.zeros(labels.shape, dtype=np.uint8)
    if not myo.any():
        return out
    d = _world(myo, affine) - axis.base
    length = axis.cavity_length_mm
    if length <= 0:
        raise ValueError(f"the axis has no cavity (length {length:.2f} mm)")
    up = d @ axis.long_axis + length  # height above the cavity apex
    theta = np.degrees(np.arctan2(d @ axis.septal, d @ axis.reference))
    basal_mid = np.floor(((theta + 30.0) % 360.0) / 60.0).astype(np.int64) % 6 + 1
    apical = np.floor(((theta + 45.0) % 360.0) / 90.0).astype(np.int64) % 4 + 13
    ids = np.where(up >= 2 * length / 3, basal_mid, basal_mid + 6)
    ids = np.where(up < length / 3, apical, ids)
    ids = np.where(up < 0, 17, ids)
    out[myo] = ids
    return out


def segment_statistics(values_mm: np.ndarray, segment_map: np.ndarray) -> list[dict]:
    """Per AHA segment 1..17: ``{"id", "name", "mean", "median", "max", "voxels"}``.

    Over the finite values of ``values_mm`` (e.g. wall thickness, mm) in each segment of
    ``segment_map`` (same shape, ids from `assign_segments`). ``max`` is a robust maximum,
    the 98th percentile within the segment, so a few-voxel artefact cannot set it.
    ``voxels`` counts the finite values; a segment without any has None statistics.
    Values rounded to 3 decimals.
    """
    values = np.asarray(values_mm, dtype=np.float64)
    segments = np.asarray(segment_map)
    if values.shape != segments.shape:
        raise ValueError(f"values_mm has shape {values.shape}, segment_map {segments.shape}")
    finite = np.isfinite(values)
    out = []
    for sid, name in AHA_SEGMENTS.items():
        v = values[finite & (segments == sid)]
        entry = {"id": sid, "name": name, "mean": None, "median": None, "max": None}
        if v.size:
            entry["mean"] = round(float(v.mean()), 3)
            entry["median"] = round(float(np.median(v)), 3)
            entry["max"] = round(float(np.percentile(v, ROBUST_MAX_PERCENTILE)), 3)
        out.append({**entry, "voxels": int(v.size)})
    return out
