"""Checks on label maps handed to the measurements (uploaded masks, model output)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sitetune.errors import InvalidInput


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
