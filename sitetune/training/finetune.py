"""Fine-tuning a base model on a site dataset: configuration, split, strategies.

Strategies (what is trained, starting from what):

- ``all`` (default): every layer, from the base weights;
- ``decoder``: the encoder (down path and bottleneck) frozen, the rest trained;
- ``head``: the last block (the top-level up path that produces the classes)
  re-initialised and trained, everything else frozen;
- ``scratch``: random initialisation, every layer (the baseline fine-tuning must beat).

Fine-tuning uses a smaller learning rate (1e-4) than training from scratch (1e-3): the
default depends on the strategy unless one is given.

The recipe for site shift (all fields of `FineTuneConfig`, stored with the job and in the
new card): augmentation that mimics another site's scanners and protocols (``augment``,
`sitetune.training.augment`), a share of patches centred on foreground voxels
(``foreground_fraction``: lesion-positive patches), a linear learning-rate warm-up over
the first ``warmup_fraction`` of the iterations before the per-epoch decay, and optional
layer-wise learning rates (``layerwise_lr_decay`` below 1: encoder levels scaled down,
decoder at the full rate; `sitetune.training.layers.parameter_groups`).
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import torch
from pydantic import BaseModel, Field, model_validator

from sitetune.errors import InvalidInput
from sitetune.imaging.load import load_volume
from sitetune.models.card import ModelCard
from sitetune.models.preprocess import labels_to_network_grid, to_network_grid
from sitetune.training.augment import Augment, AugmentSpec
from sitetune.training.datasets import SiteCase, SiteDataset
from sitetune.training.layers import unet_parts
from sitetune.training.loop import TrainConfig, TrainingCase

FINE_TUNE_LR = 1e-4
SCRATCH_LR = 1e-3


class Strategy(StrEnum):
    ALL = "all"
    DECODER = "decoder"
    HEAD = "head"
    SCRATCH = "scratch"


class Budget(StrEnum):
    """How much training a site buys: presets of epochs x iterations per epoch (explicit
    ``epochs`` / ``iterations_per_epoch`` win over the preset)."""

    QUICK = "quick"
    STANDARD = "standard"
    THOROUGH = "thorough"


BUDGETS = {Budget.QUICK: (5, 10), Budget.STANDARD: (20, 20), Budget.THOROUGH: (60, 30)}


class FineTuneConfig(BaseModel):
    """Parameters of one fine-tune job (stored with the job and in the new card)."""

    budget: Budget | None = None  # presets epochs x iterations (`BUDGETS`)
    time_limit_s: float | None = Field(None, gt=0, le=7 * 24 * 3600)  # stop training by then
    patience: int | None = Field(None, ge=1, le=1000)  # epochs without a better held-out Dice
    strategy: Strategy = Strategy.ALL
    epochs: int = Field(20, ge=1, le=2000)
    iterations_per_epoch: int = Field(20, ge=1, le=10_000)
    learning_rate: float | None = Field(None, gt=0, le=1)  # None: by strategy
    lr_decay: float = Field(0.97, gt=0, le=1)
    batch_size: int = Field(2, ge=1, le=64)
    augment: Augment = Augment.SITE_SHIFT  # none | light | site_shift
    foreground_fraction: float = Field(0.67, ge=0, le=1)  # patches centred on foreground
    warmup_fraction: float = Field(0.05, ge=0, le=0.5)  # iterations of linear LR warm-up
    layerwise_lr_decay: float = Field(1.0, gt=0, le=1)  # 1: off; <1: encoder LR scaled down
    val_fraction: float = Field(0.3, gt=0, lt=1)
    val_cases: list[str] | None = None
    seed: int = 0
    auto_promote: bool = False
    promote_margin: float = Field(0.0, ge=0, le=1)  # Dice the candidate may trail by

    @model_validator(mode="after")
    def _budget(self) -> FineTuneConfig:
        if self.budget is not None:
            epochs, iterations = BUDGETS[self.budget]
            if "epochs" not in self.model_fields_set:
                self.epochs = epochs
            if "iterations_per_epoch" not in self.model_fields_set:
                self.iterations_per_epoch = iterations
        return self

    @model_validator(mode="after")
    def _default_learning_rate(self) -> FineTuneConfig:
        if self.learning_rate is None:
            scratch = self.strategy is Strategy.SCRATCH
            self.learning_rate = SCRATCH_LR if scratch else FINE_TUNE_LR
        return self

    def train_config(self, card: ModelCard) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            iterations_per_epoch=self.iterations_per_epoch,
            learning_rate=float(self.learning_rate),
            lr_decay=self.lr_decay,
            batch_size=self.batch_size,
            patch_size=tuple(card.patch_size),
            foreground_fraction=self.foreground_fraction,
            warmup_fraction=self.warmup_fraction,
            layerwise_lr_decay=self.layerwise_lr_decay,
            augment=AugmentSpec.for_card(card, self.augment),
            seed=self.seed,
        )


def job_config(card: ModelCard, options: dict) -> FineTuneConfig:
    """A job's configuration on base ``card``: the ``options`` given, then the card's
    recommended ones (`ModelCard.fine_tune`; its learning rate is a fine-tuning rate, so
    not for ``scratch``), then the defaults. Raises pydantic's ValidationError."""
    recommended = card.fine_tune.model_dump(exclude_none=True)
    if options.get("strategy") == Strategy.SCRATCH:  # the member or its value
        recommended.pop("learning_rate", None)
    return FineTuneConfig.model_validate(recommended | dict(options))


def split_cases(dataset: SiteDataset, config: FineTuneConfig) -> tuple[list[SiteCase], list]:
    """``(training, held_out)``: the named ``val_cases``, else a seeded random fraction
    (at least one case on each side)."""
    names = [c.name for c in dataset.cases]
    if config.val_cases:
        unknown = sorted(set(config.val_cases) - set(names))
        if unknown:
            raise InvalidInput(
                f"val_cases {unknown} are not in the dataset; its cases: {names}",
                code="unknown_val_cases",
            )
        held = set(config.val_cases)
    else:
        order = np.random.default_rng(config.seed).permutation(len(names))
        count = min(max(1, round(config.val_fraction * len(names))), len(names) - 1)
        held = {names[i] for i in order[:count]}
    training = [c for c in dataset.cases if c.name not in held]
    held_out = [c for c in dataset.cases if c.name in held]
    if not training or not held_out:
        raise InvalidInput(
            f"the split leaves {len(training)} training and {len(held_out)} held-out cases; "
            "both need at least one",
            code="bad_split",
        )
    return training, held_out


def training_cases(cases: list[SiteCase], card: ModelCard) -> list[TrainingCase]:
    """Every labelled frame of ``cases`` on the network grid (unlabelled frames skipped)."""
    out = []
    for case in cases:
        image, labels = load_volume(case.image), load_volume(case.label)
        for t in case.labelled_phases:
            tensor, _ = to_network_grid(image.phase(t).array, image.affine, card)
            grid_labels = labels_to_network_grid(labels.phase(t).array, labels.affine, card)
            out.append(TrainingCase(tensor, grid_labels))
    return out


def apply_strategy(network: torch.nn.Module, strategy: Strategy, seed: int) -> dict:
    """Freeze / re-initialise ``network`` (holding the base weights) for ``strategy``;
    returns a summary (trainable and total parameter counts)."""
    strategy = Strategy(strategy)
    torch.manual_seed(seed)
    if strategy is Strategy.SCRATCH:
        for module in network.modules():
            if hasattr(module, "reset_parameters") and module is not network:
                module.reset_parameters()
    elif strategy is Strategy.DECODER:
        encoder, _ = unet_parts(network)
        for block in encoder:
            block.requires_grad_(False)
    elif strategy is Strategy.HEAD:
        _, decoder = unet_parts(network)
        network.requires_grad_(False)
        for module in decoder[0].modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        decoder[0].requires_grad_(True)
    total = sum(p.numel() for p in network.parameters())
    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    return {"strategy": strategy.value, "trainable_parameters": trainable, "parameters": total}
