"""Analytic wall-thickness phantoms with exact thickness.

Each phantom is a label map (1 "blood pool" inside, 2 wall, 0 outside) sampled at voxel
centres from exact surfaces, whose true Laplace thickness is known in closed form:
spherical and cylindrical shells (field lines radial: thickness = outer - inner radius)
and slabs between parallel planes (thickness = plane distance) at any orientation.
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
