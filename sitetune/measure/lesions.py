"""Lesion burden of a binary lesion mask: count, total and per-lesion volume, place.

Lesions are the connected components of the mask (26-connectivity by default, as the
WMH challenge counts them; 6 and 18 selectable). Components smaller than a minimum
volume (default 0.015 mL, i.e. 15 mm^3) are dropped from the count and the total and
reported separately. Volumes use the exact voxel volume (the affine's determinant), so
anisotropic and oblique grids are measured exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np

from sitetune.errors import InvalidInput
from sitetune.imaging.volume import voxel_volume_ml

DEFAULT_MIN_LESION_ML = 0.015
CONNECTIVITIES = (6, 18, 26)
LESION_LABELS = {1: "lesion"}
_RELATIVE_TOLERANCE = 1e-9  # a component exactly at the minimum volume is kept


@dataclass(frozen=True)
class Lesion:
    """One connected lesion; ``id`` is its rank by volume (1 = largest)."""

    id: int
    voxels: int
    volume_ml: float
    centroid_mm: tuple[float, float, float]  # world mm of the voxel-centre mean
    bbox_vox: tuple[tuple[int, int, int], tuple[int, int, int]]  # first and last voxel, inclusive

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "voxels": self.voxels,
            "volume_ml": round(self.volume_ml, 9),
            "centroid_mm": [round(c, 4) for c in self.centroid_mm],
            "bbox_vox": [list(self.bbox_vox[0]), list(self.bbox_vox[1])],
        }


@dataclass(frozen=True)
class LesionReport:
    """The lesions of one mask, largest first, and the components too small to count."""

    lesions: list[Lesion]
    instances: np.ndarray  # the mask's shape: lesion id per voxel, 0 elsewhere (and dropped)
    voxel_ml: float
    min_lesion_ml: float
    connectivity: int
    dropped_count: int
    dropped_ml: float

    @property
    def count(self) -> int:
        return len(self.lesions)

    @property
    def total_ml(self) -> float:
        """Total volume of the counted lesions (voxels x exact voxel volume)."""
        return sum(lesion.voxels for lesion in self.lesions) * self.voxel_ml

    def to_json(self) -> dict:
        return {
            "total_ml": round(self.total_ml, 9),
            "count": self.count,
            "min_lesion_ml": self.min_lesion_ml,
            "connectivity": self.connectivity,
            "below_min": {"count": self.dropped_count, "volume_ml": round(self.dropped_ml, 9)},
            "lesions": [lesion.to_json() for lesion in self.lesions],
        }


def check_lesion_options(connectivity: int, min_lesion_ml: float) -> tuple[int, float]:
    """Validate the user's options (cheap, before any pixel work)."""
    if connectivity not in CONNECTIVITIES:
        raise InvalidInput(
            f"connectivity must be one of {list(CONNECTIVITIES)}, got {connectivity}",
            code="invalid_connectivity",
        )
    if not np.isfinite(min_lesion_ml) or min_lesion_ml < 0:
        raise InvalidInput(
            f"min_lesion_ml must be a finite volume >= 0 mL, got {min_lesion_ml}",
            code="invalid_min_lesion_ml",
        )
    return int(connectivity), float(min_lesion_ml)


def lesion_statistics(
    mask: np.ndarray,
    affine: np.ndarray,
    *,
    connectivity: int = 26,
    min_lesion_ml: float = DEFAULT_MIN_LESION_ML,
) -> LesionReport:
    """Lesions of a binary mask, largest first.

    Args:
        mask: ``(X, Y, Z)`` array, non-zero = lesion.
        affine: ``(4, 4)`` voxel index -> world mm; centroids are reported in this frame
            (pass the input's own frame: the NIfTI affine, or DICOM LPS).
        connectivity: 6, 18 or 26 (face, edge, corner neighbours).
        min_lesion_ml: components with a smaller volume are dropped (and counted apart).

    Ties in volume are ordered by the component's first voxel in C (raster) order, so the
    result is deterministic.
    """
    connectivity, min_lesion_ml = check_lesion_options(connectivity, min_lesion_ml)
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise InvalidInput(
            f"lesion volume needs a 3D image or mask, got shape {list(mask.shape)}",
            code="not_3d",
        )
    affine = np.asarray(affine, dtype=np.float64)
    voxel_ml = voxel_volume_ml(affine)
    components, n = cc3d.connected_components(
        mask != 0, connectivity=connectivity, return_N=True, out_dtype=np.uint32
    )
    stats = cc3d.statistics(components, no_slice_conversion=True)
    voxels = np.asarray(stats["voxel_counts"][1 : n + 1], dtype=np.int64)
    kept = voxels * voxel_ml >= min_lesion_ml * (1 - _RELATIVE_TOLERANCE)
    # cc3d numbers components in raster order of their first voxel: a stable sort by
    # decreasing size keeps that order among equal sizes.
    order = [int(c) for c in np.argsort(-voxels, kind="stable") if kept[c]]
    relabel = np.zeros(n + 1, dtype=np.uint32)
    lesions = []
    for rank, c in enumerate(order, start=1):
        relabel[c + 1] = rank
        centroid = affine[:3, :3] @ stats["centroids"][c + 1] + affine[:3, 3]
        box = np.asarray(stats["bounding_boxes"][c + 1]).reshape(3, 2)  # (min, max) per axis
        lesions.append(
            Lesion(
                id=rank,
                voxels=int(voxels[c]),
                volume_ml=float(voxels[c] * voxel_ml),
                centroid_mm=tuple(float(v) for v in centroid),
                bbox_vox=(tuple(int(v) for v in box[:, 0]), tuple(int(v) for v in box[:, 1])),
            )
        )
    dtype = np.uint16 if len(order) < np.iinfo(np.uint16).max else np.uint32
    return LesionReport(
        lesions=lesions,
        instances=relabel[components].astype(dtype),
        voxel_ml=voxel_ml,
        min_lesion_ml=min_lesion_ml,
        connectivity=connectivity,
        dropped_count=int((~kept).sum()),
        dropped_ml=float(voxels[~kept].sum() * voxel_ml),
    )
