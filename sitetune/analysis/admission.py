"""Inputs a model cannot meaningfully process are refused before inference (422).

A 3D network run on a single slice, a two-slice stack or a localizer returns a label map
that looks like an answer and is not one. The limits come from the model card
(`ModelCard.input_limits`): fewest planes along any axis, the smallest extent in mm
(default: a quarter of the patch's field of view), localizers, and the modality.
"""

from __future__ import annotations

from sitetune.errors import InvalidInput
from sitetune.imaging.dicom import is_localizer
from sitetune.imaging.volume import Volume
from sitetune.models.card import ModelCard

_AXES = ("i (along a row)", "j (down a column)", "k (across slices)")


def check_input(volume: Volume, card: ModelCard, ref: str) -> None:
    """Refuse ``volume`` for the model ``ref`` (card ``card``) when it cannot be segmented.

    Raises:
        InvalidInput: codes ``wrong_modality``, ``localizer``, ``single_slice``,
            ``too_thin``; the message names the value found and the limit.
    """
    if volume.modality and volume.modality != card.modality:
        raise InvalidInput(
            f"model {ref} reads {card.modality} images; the input is {volume.modality}",
            code="wrong_modality",
        )
    limits = card.input_limits
    dicom = volume.dicom
    if limits.refuse_localizers and dicom and all(is_localizer(d) for d in dicom.datasets):
        raise InvalidInput(
            "the series is a localizer (Image Type LOCALIZER): a scout image, not a "
            f"volume {ref} can segment; send the diagnostic series",
            code="localizer",
        )
    shape, spacing = volume.shape, volume.spacing
    view = " x ".join(f"{n * s:.0f}" for n, s in zip(card.patch_size, card.spacing_mm, strict=True))
    if min(shape) == 1:
        raise InvalidInput(
            f"the input is a single slice (shape {list(shape)}); {ref} segments volumes of "
            f"at least {limits.min_slices} slices covering {card.min_extent_mm:.0f} mm",
            code="single_slice",
        )
    for axis, (n, step) in enumerate(zip(shape, spacing, strict=True)):
        extent = n * step
        if n < limits.min_slices or extent < card.min_extent_mm:
            raise InvalidInput(
                f"the input is too thin along axis {_AXES[axis]}: {n} planes x {step:.2f} mm "
                f"= {extent:.1f} mm; {ref} needs at least {limits.min_slices} planes and "
                f"{card.min_extent_mm:.0f} mm (its field of view is {view} mm)",
                code="too_thin",
            )
