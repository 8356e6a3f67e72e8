"""Typed answers of the inference routes (``../shared/API.md``), for Python callers.

Client-side models only: they parse what the service sends and share nothing with the
server's code. Every model accepts fields it does not know (``extra="allow"``), and every
field the contract lets a newer or older server leave out has a default, so a service
that adds a field does not break a client. ``answer`` keeps the JSON exactly as received.

>>> result = client.thickness_file("cine.zip")  # doctest: +SKIP
>>> result.ed.thickness_mm.median, result.outputs["sr"].available  # doctest: +SKIP
(8.4, True)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr


class Inference(StrEnum):
    """An inference command: its route and its result type."""

    SEGMENT = "segment"
    THICKNESS = "thickness"
    LESIONS = "lesions"

    @property
    def route(self) -> str:
        return {"segment": "/v1/segment", "thickness": "/v1/thickness",
                "lesions": "/v1/lesion-volume"}[self.value]  # fmt: skip

    @property
    def result_type(self) -> type[InferenceResult]:
        return {"segment": SegmentResult, "thickness": ThicknessResult,
                "lesions": LesionVolumeResult}[self.value]  # fmt: skip


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)


class Output(_Answer):
    """One entry of ``outputs``: where to fetch it, or why it does not exist."""

    available: bool
    url: str | None = None  # a path on the service, e.g. /v1/results/<id>/mask
    media_type: str | None = None
    reason: str | None = None  # when not available
    phases: list[str] | None = None  # SEG: one per phase, e.g. ["ed", "es"]


class ModelRef(_Answer):
    name: str
    version: str


class Quality(_Answer):
    """Label-free quality: ``score`` in 0..1 and the flags raised."""

    score: float | None = None
    flags: list[str] = Field(default_factory=list)


class InferenceResult(_Answer):
    """The fields every inference answer carries."""

    result_id: str
    model: ModelRef | None = None  # None for a mask upload
    backend: str | None = None
    input: dict[str, Any] = Field(default_factory=dict)  # shape, spacing_mm, phases, ...
    outputs: dict[str, Output] = Field(default_factory=dict)
    provenance: dict[str, Any] | None = None
    quality: Quality | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    _answer: dict = PrivateAttr(default_factory=dict)

    @classmethod
    def from_answer(cls, answer: dict) -> Self:
        """Parse the service's JSON; ``answer`` keeps it as received."""
        result = cls.model_validate(answer)
        result._answer = answer
        return result

    @property
    def answer(self) -> dict:
        """The JSON answer as the service sent it."""
        return self._answer


class LabelVolume(_Answer):
    volume_ml: float | None = None


class SegmentResult(InferenceResult):
    """``POST /v1/segment``: each label's volume."""

    labels: dict[str, LabelVolume] = Field(default_factory=dict)


class ThicknessStats(_Answer):
    """Wall thickness in mm over the myocardium of one phase (or one AHA segment)."""

    mean: float | None = None
    median: float | None = None
    p95: float | None = None
    max: float | None = None


class ThicknessPhase(_Answer):
    index: int
    role: str | None = None  # "ED", "ES" or None
    thickness_mm: ThicknessStats | None = None  # None: the phase was not measured
    volumes_ml: dict[str, float | None] = Field(default_factory=dict)  # blood_pool, myocardium


class AhaSegment(_Answer):
    id: int  # 1..17
    name: str | None = None
    ed: ThicknessStats | None = None
    es: ThicknessStats | None = None
    thickening_pct: float | None = None


class ThicknessResult(InferenceResult):
    """``POST /v1/thickness``: thickness and volumes per phase, ED and ES, AHA segments."""

    phases: list[ThicknessPhase] = Field(default_factory=list)
    ed: ThicknessPhase | None = None
    es: ThicknessPhase | None = None
    thickening_pct: float | None = None
    method: dict[str, Any] = Field(default_factory=dict)
    segments: list[AhaSegment] = Field(default_factory=list)
    axis: dict[str, Any] | None = None


class Lesion(_Answer):
    id: int
    volume_ml: float
    voxels: int | None = None
    centroid_mm: list[float] = Field(default_factory=list)  # the input's own world frame
    bbox_vox: list[list[int]] | None = None  # [[i0, j0, k0], [i1, j1, k1]]


class LesionVolumeResult(InferenceResult):
    """``POST /v1/lesion-volume``: lesions largest first, their count and total volume."""

    total_ml: float
    count: int
    min_lesion_ml: float | None = None
    connectivity: int | None = None
    lesions: list[Lesion] = Field(default_factory=list)
