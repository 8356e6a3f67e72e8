"""Model cards: everything needed to run, judge and trace one model version.

A card is a pydantic model stored as JSON beside the weights and in the registry. It
states the labels (with their coded structures), the input the network expects
(modality, spacing, orientation, intensity normalisation, patch size), the network
spec, post-processing, provenance (parent version, dataset fingerprint, training
parameters) and metrics.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sitetune.errors import InputError, InvalidInput
from sitetune.imaging.codes import StructureCode, structure


class Architecture(StrEnum):
    UNET = "UNet"
    SEGRESNET = "SegResNet"
    DYNUNET = "DynUNet"


class IntensityKind(StrEnum):
    WINDOW = "window"  # clip to [low, high], scale to [0, 1] (CT, in HU)
    ZSCORE = "zscore"  # subtract mean, divide by std over the foreground (MR)


class Label(BaseModel):
    """One output class: its value in label maps and the name of its coded structure."""

    value: int = Field(ge=1)
    name: str
    keep_largest_component: bool = False
    min_component_ml: float = Field(0.0, ge=0.0)  # smaller 26-connected components dropped

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        structure(name)  # raises KeyError naming the known labels
        return name

    @property
    def code(self) -> StructureCode:
        return structure(self.name)


class Intensity(BaseModel):
    kind: IntensityKind
    low: float | None = None  # window only
    high: float | None = None

    @model_validator(mode="after")
    def _window_bounds(self) -> Intensity:
        if self.kind is IntensityKind.WINDOW and not (
            self.low is not None and self.high is not None and self.low < self.high
        ):
            raise ValueError("a window needs low < high")
        return self


class NetworkSpec(BaseModel):
    """A MONAI network and its constructor arguments (spatial_dims, channels... )."""

    architecture: Architecture
    params: dict[str, Any] = Field(default_factory=dict)


class InputLimits(BaseModel):
    """What input the model can meaningfully process; anything else is refused (422)
    before inference, with the reason. Defaults hold for a card that states none."""

    min_slices: int = Field(3, ge=1, le=64)  # fewer planes along any axis: not a volume
    # the thinnest axis must cover this many mm; None: a quarter of the patch's field of
    # view on the network grid (patch_size x spacing_mm), along its smallest axis
    min_extent_mm: float | None = Field(None, gt=0, le=1000)
    refuse_localizers: bool = True  # Image Type LOCALIZER (scouts, topograms)


class Augment(StrEnum):
    """How strongly training patches are augmented (`sitetune.training.augment`; here so
    that a card can recommend one without importing the training stack)."""

    NONE = "none"
    CONTRAST = "contrast"  # CT: the contrast enhancement only
    LIGHT = "light"
    SITE_SHIFT = "site_shift"


class FineTuneDefaults(BaseModel):
    """The fine-tune options the model's publisher found to work for it (measured in
    ``bench/transfer.py``): a job on this base takes them where its submission does not set
    the option (`sitetune.training.submission.check_job_request`). ``learning_rate`` is
    for fine-tuning; a ``scratch`` job keeps the scratch rate."""

    model_config = ConfigDict(extra="forbid")

    augment: Augment | None = None
    learning_rate: float | None = Field(None, gt=0, le=1)
    foreground_fraction: float | None = Field(None, ge=0, le=1)


class Provenance(BaseModel):
    parent: str | None = None  # "name:version" this one was fine-tuned from
    dataset_fingerprint: str | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    created_by: str = "sitetune"


class ModelCard(BaseModel):
    """The card of one model version (``version`` is set by the registry)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    version: str | None = None
    description: str = ""
    modality: str  # DICOM modality the model reads: "CT" or "MR"
    labels: list[Label]
    spacing_mm: tuple[float, float, float]
    orientation: str = "RAS"
    intensity: Intensity
    patch_size: tuple[int, int, int]
    input_limits: InputLimits = Field(default_factory=InputLimits)
    fine_tune: FineTuneDefaults = Field(default_factory=FineTuneDefaults)
    network: NetworkSpec
    provenance: Provenance = Field(default_factory=Provenance)
    metrics: dict[str, Any] = Field(default_factory=dict)
    export: dict[str, Any] = Field(default_factory=dict)

    @field_validator("patch_size")
    @classmethod
    def _patch(cls, patch: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 8 <= n <= 512 for n in patch) or patch[0] * patch[1] * patch[2] > 256**3:
            raise ValueError(
                f"patch_size must be 8..512 per axis, at most 256^3 voxels; got {patch}"
            )
        return patch

    @field_validator("spacing_mm")
    @classmethod
    def _spacing(cls, spacing: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not 0.05 <= s <= 20.0 for s in spacing):
            raise ValueError(f"spacing_mm must be 0.05..20 mm per axis; got {spacing}")
        return spacing

    @field_validator("network")
    @classmethod
    def _network_size(cls, network: NetworkSpec) -> NetworkSpec:
        channels = network.params.get("channels", [])
        if (
            not isinstance(channels, list | tuple)
            or len(channels) > 8
            or any(not isinstance(c, int) or not 1 <= c <= 1024 for c in channels)
        ):
            raise ValueError(f"network channels must be at most 8 ints of 1..1024; got {channels}")
        return network

    @field_validator("labels")
    @classmethod
    def _consecutive(cls, labels: list[Label]) -> list[Label]:
        if len(labels) > 64:
            raise ValueError(f"at most 64 labels; got {len(labels)}")
        values = [label.value for label in labels]
        if values != list(range(1, len(values) + 1)):
            raise ValueError(f"label values must be 1..N in order, got {values}")
        return labels

    @model_validator(mode="after")
    def _recommendation_fits(self) -> ModelCard:
        if self.fine_tune.augment is Augment.CONTRAST and self.intensity.kind is not (
            IntensityKind.WINDOW
        ):
            raise ValueError(
                "fine_tune.augment 'contrast' varies CT contrast enhancement: "
                "it needs a window intensity"
            )
        return self

    @classmethod
    def parse(cls, text: str | None) -> ModelCard:
        """A card from the JSON an operator sent; `InputError` / `InvalidInput` (422)
        saying what is wrong."""
        if not text:
            raise InputError("form field 'card' (model card JSON) is required", code="missing_card")
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise InvalidInput(
                f"invalid model card: {exc.errors(include_url=False)}", code="invalid_card"
            ) from exc

    @property
    def digest(self) -> str:
        """SHA-256 of the card's content (what produced a result, down to its metrics)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    @property
    def out_channels(self) -> int:
        """Network outputs: background plus one channel per label."""
        return len(self.labels) + 1

    @property
    def min_extent_mm(self) -> float:
        """The smallest extent (mm) an input must have along every axis."""
        if self.input_limits.min_extent_mm is not None:
            return self.input_limits.min_extent_mm
        return 0.25 * min(n * s for n, s in zip(self.patch_size, self.spacing_mm, strict=True))

    @property
    def label_names(self) -> dict[int, str]:
        return {label.value: label.name for label in self.labels}
