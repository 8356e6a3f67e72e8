"""Admission: inputs a model cannot meaningfully process are refused before inference
(422), and analyses are admitted by the memory they need (413 / 503).

A 3D network run on a single slice, a two-slice stack or a localizer returns a label map
that looks like an answer and is not one. The limits come from the model card
(`ModelCard.input_limits`): fewest planes along any axis, the smallest extent in mm
(default: a quarter of the patch's field of view), localizers, and the modality.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from sitetune.errors import InvalidInput, PayloadTooLarge, ServiceBusy
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


def estimated_bytes(volume: Volume, card: ModelCard) -> int:
    """What segmenting and measuring ``volume`` with ``card``'s model holds in memory at
    its peak, in bytes (an upper estimate): the float32 input (all phases), the network
    grid image, logits and softmax of one phase, its probabilities resampled onto the
    input grid, the label maps and a float32 map (thickness) of every phase."""
    voxels = int(np.prod(volume.shape, dtype=np.int64))
    phases = volume.n_phases
    extent = [n * s for n, s in zip(volume.shape, volume.spacing, strict=True)]
    grid = int(np.prod([max(1.0, e / s) for e, s in zip(extent, card.spacing_mm, strict=True)]))
    channels = card.out_channels
    per_phase = grid * 4 * (1 + 2 * channels) + voxels * 4 * (channels + 1)
    return voxels * phases * (4 + 1 + 4) + per_phase


class MemoryGate:
    """Analyses a worker process runs at once, bounded by the memory they need.

    ``reserve(bytes)`` admits an analysis whose estimate fits beside those running, waits
    up to ``wait_seconds`` for room, then refuses with `ServiceBusy` (503, Retry-After);
    an estimate above the whole budget can never run: `PayloadTooLarge` (413) naming
    both numbers."""

    def __init__(self, budget_bytes: int, wait_seconds: float = 30.0) -> None:
        self.budget, self.wait_seconds = budget_bytes, wait_seconds
        self.used = 0
        self._room = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int, what: str) -> Iterator[None]:
        gib = 1 << 30
        if nbytes > self.budget:
            raise PayloadTooLarge(
                f"{what} needs about {nbytes / gib:.1f} GiB; a worker may commit "
                f"{self.budget / gib:.1f} GiB (SITETUNE_WORKER_MEMORY_BYTES): send a smaller "
                "input or fewer phases",
                code="over_memory_budget",
            )
        with self._room:
            if not self._room.wait_for(lambda: self.used + nbytes <= self.budget,
                                       timeout=self.wait_seconds):  # fmt: skip
                raise ServiceBusy(
                    f"the worker is busy with other analyses ({self.used / gib:.1f} of "
                    f"{self.budget / gib:.1f} GiB committed); try again shortly",
                    retry_after=max(1, int(self.wait_seconds)),
                )
            self.used += nbytes
        try:
            yield
        finally:
            with self._room:
                self.used -= nbytes
                self._room.notify_all()
