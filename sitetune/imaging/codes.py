"""Coded concepts for the structures sitetune segments (SNOMED CT, as DICOM uses them).

One table, used by the DICOM SEG writer, the model cards and the SR writer.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code


@dataclass(frozen=True)
class StructureCode:
    """Segmented property category and type of one label, as a DICOM SEG segment needs."""

    label: str
    category: Code
    type: Code
    anatomic_region: Code | None = None
    display_rgb: tuple[int, int, int] | None = None  # the SEG's recommended display colour


LV_BLOOD_POOL = StructureCode(
    "LV blood pool",
    codes.SCT.AnatomicalStructure,
    Code("87878005", "SCT", "Left ventricle"),
    codes.SCT.Heart,
    (206, 110, 84),  # 3D Slicer's colour for the left ventricle
)
LV_MYOCARDIUM = StructureCode(
    "LV myocardium",
    codes.SCT.AnatomicalStructure,
    codes.SCT.LeftVentricleMyocardium,
    codes.SCT.Heart,
    (177, 122, 101),  # heart muscle
)
LESION = StructureCode(
    "lesion",
    codes.SCT.MorphologicallyAbnormalStructure,
    codes.SCT.Lesion,
    codes.SCT.Brain,
    (255, 220, 0),
)

STRUCTURES: dict[str, StructureCode] = {s.label: s for s in (LV_BLOOD_POOL, LV_MYOCARDIUM, LESION)}


def structure(label: str) -> StructureCode:
    """The coded concept of a label name (``"LV myocardium"``, ``"lesion"``, ...)."""
    try:
        return STRUCTURES[label]
    except KeyError:
        raise KeyError(f"no code for label {label!r}; known labels: {sorted(STRUCTURES)}") from None


def _aha(level: str, wall: str) -> Code:
    return getattr(codes.cid3717, f"LeftVentricle{level}{wall}Segment")


_FOUR = ("Anterior", "Septal", "Inferior", "Lateral")
_SIX = ("Anterior", "Anteroseptal", "Inferoseptal", "Inferior", "Inferolateral", "Anterolateral")
# AHA 17-segment model ids -> DICOM CID 3717 "Myocardial Wall Segments" (SNOMED CT)
AHA_SEGMENT_CODES: dict[int, Code] = {
    **{k + 1: _aha("Basal", wall) for k, wall in enumerate(_SIX)},
    **{k + 7: _aha("Mid", wall) for k, wall in enumerate(_SIX)},
    **{k + 13: _aha("Apical", wall) for k, wall in enumerate(_FOUR)},
    17: codes.cid3717.ApexOfLeftVentricle,
}
