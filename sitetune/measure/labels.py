"""The label maps the measurements read: their values, the measurement options that every
caller names, and the checks on maps handed in (uploaded masks, model output). A light
module (no numba): the HTTP surface imports it without the solvers."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

import numpy as np

from sitetune.errors import InvalidInput

BLOOD_POOL, MYOCARDIUM = 1, 2  # the values `measure_ventricle` reads
LV_LABELS = {BLOOD_POOL: "LV blood pool", MYOCARDIUM: "LV myocardium"}


class Surfaces(StrEnum):
    """How wall thickness places the surfaces between voxel centres (`wall_thickness`)."""

    FITTED = "fitted"  # fitted locally to the staircase of the label map
    SMOOTHED = "smoothed"  # the 0.5 level of a smoothed indicator alone


def as_label_map(array: np.ndarray, expected: Mapping[int, str]) -> np.ndarray:
    """``array`` as uint8 labels, or `InvalidInput` naming what does not belong.

    ``expected`` maps each allowed non-zero value to its name (0 is background). Float
    arrays are accepted when every value is a whole number (NIfTI masks are often saved
    as float).
    """
    array = np.asarray(array)
    whole = np.issubdtype(array.dtype, np.integer) or (
        np.all(np.isfinite(array)) and np.array_equal(array, np.round(array))
    )
    if not whole:
        raise InvalidInput(
            f"the mask holds non-integer values; send a label map ({_describe(expected)})",
            code="mask_not_integer",
        )
    found = {int(v) for v in np.unique(array)}
    unexpected = sorted(found - {0, *expected})
    if unexpected:
        raise InvalidInput(
            f"the mask holds unexpected label values {unexpected}; allowed: {_describe(expected)}",
            code="unexpected_labels",
        )
    return array.astype(np.uint8, copy=False)


def _describe(expected: Mapping[int, str]) -> str:
    return ", ".join(["0 background", *(f"{v} {name}" for v, name in sorted(expected.items()))])
