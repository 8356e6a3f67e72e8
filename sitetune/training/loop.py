"""The supervised training loop shared by base-model training and site fine-tuning.

Patches are drawn from preprocessed cases held in memory (network grid), a fraction
of them centred on foreground voxels (as MONAI's ``RandCropByPosNegLabeld`` does: the
centre is a random foreground voxel, the crop kept inside the volume), then augmented
(`sitetune.training.augment`, seeded per patch from the run's random state); MONAI's
Dice + cross-entropy loss; Adam, optionally with layer-wise learning rates
(`sitetune.training.layers.parameter_groups`), a linear warm-up over the first
iterations and exponential learning-rate decay per epoch (`learning_rate_factor`);
deterministic given the seed (CPU). On a GPU the forward pass runs under bf16 autocast
(mixed precision; bf16 needs no loss scaling) and patches are augmented on the GPU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from sitetune.training.augment import AugmentSpec, apply_augmentation, augmentation
from sitetune.training.layers import parameter_groups

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training parameters (stored with the job / the card's provenance)."""

    epochs: int = 40
    iterations_per_epoch: int = 25
    learning_rate: float = 1e-3
    lr_decay: float = 0.97  # multiplied into the learning rate after every epoch
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (64, 64, 64)
    foreground_fraction: float = 0.67  # share of patches centred on a foreground voxel
    warmup_fraction: float = 0.0  # share of all iterations with a linear LR warm-up
    layerwise_lr_decay: float = 1.0  # 1: one learning rate; <1: `parameter_groups`
    augment: AugmentSpec = field(default_factory=AugmentSpec)  # none by default
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.foreground_fraction <= 1:
            raise ValueError(
                f"foreground_fraction must be in [0, 1]; got {self.foreground_fraction}"
            )
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1); got {self.warmup_fraction}")
        if not 0 < self.layerwise_lr_decay <= 1:
            raise ValueError(f"layerwise_lr_decay must be in (0, 1]; got {self.layerwise_lr_decay}")

    @property
    def warmup_iterations(self) -> int:
        """Iterations of linear warm-up: ``warmup_fraction`` of all, at least one if any."""
        if self.warmup_fraction == 0:
            return 0
        return max(1, round(self.warmup_fraction * self.epochs * self.iterations_per_epoch))

    def as_dict(self) -> dict:
        out = asdict(self)
        out["augment"]["strength"] = self.augment.strength.value
        return out


def learning_rate_factor(iteration: int, config: TrainConfig) -> float:
    """The multiplier of the learning rate at training step ``iteration`` (0-based, over
    the whole run): ``(iteration + 1) / warmup_iterations`` during the warm-up, times
    ``lr_decay ** epoch`` (the epoch the step belongs to)."""
    factor = config.lr_decay ** (iteration // config.iterations_per_epoch)
    warmup = config.warmup_iterations
    if iteration < warmup:
        factor *= (iteration + 1) / warmup
    return factor


def optimiser_and_schedule(
    network: torch.nn.Module, config: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam over ``network``'s trainable parameters (layer-wise groups per the config) and
    the per-iteration schedule `learning_rate_factor`."""
    groups = parameter_groups(network, config.learning_rate, config.layerwise_lr_decay)
    optimiser = torch.optim.Adam(groups, lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda iteration: learning_rate_factor(iteration, config)
    )
    return optimiser, schedule


@dataclass
class TrainingCase:
    """One preprocessed case: normalised image ``(1, X, Y, Z)`` and labels ``(X, Y, Z)``."""

    image: torch.Tensor
    labels: np.ndarray


def _pad_to(case: TrainingCase, patch: tuple[int, int, int]) -> TrainingCase:
    pads = [max(0, p - s) for p, s in zip(patch, case.labels.shape, strict=True)]
    if not any(pads):
        return case
    torch_pad = [x for p in reversed(pads) for x in (p // 2, p - p // 2)]
    image = F.pad(case.image[None], torch_pad, mode="replicate")[0]
    labels = np.pad(case.labels, [(p // 2, p - p // 2) for p in pads])
    return TrainingCase(image, labels)


def sample_patch(
    case: TrainingCase, patch: tuple[int, int, int], rng: np.random.Generator, foreground: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``patch``-sized crop (image ``(1, *patch)``, labels ``(1, *patch)``)."""
    shape = np.asarray(case.labels.shape)
    size = np.asarray(patch)
    if foreground and case.labels.any():
        fg = np.flatnonzero(case.labels)
        centre = np.asarray(np.unravel_index(fg[rng.integers(len(fg))], case.labels.shape))
        start = np.clip(centre - size // 2, 0, shape - size)
    else:
        start = np.asarray([rng.integers(0, s - p + 1) for s, p in zip(shape, size, strict=True)])
    box = tuple(slice(a, a + p) for a, p in zip(start, size, strict=True))
    labels = torch.from_numpy(case.labels[box].astype(np.int64))[None]
    return case.image[(slice(None), *box)], labels


class Trainer:
    """One training run: network, optimiser, schedule and random state, resumable.

    `state_dict` / `load_state_dict` capture everything needed to continue exactly where
    an epoch ended (the fine-tune worker checkpoints after every epoch).
    """

    def __init__(
        self, network: torch.nn.Module, cases: list[TrainingCase], config: TrainConfig
    ) -> None:
        from monai.losses import DiceCELoss

        if not cases:
            raise ValueError("no training cases")
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.network, self.config = network, config
        self.crop = config.augment.crop_size(config.patch_size)  # sampled around a patch
        self.cases = [_pad_to(c, self.crop) for c in cases]
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        self.optimiser, self.schedule = optimiser_and_schedule(network, config)
        self.history: list[float] = []
        self.device = next(network.parameters()).device
        self.autocast = self.device.type == "cuda"
        self.augment = augmentation(config.augment, config.patch_size, self.device)

    def _loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images, labels = images.to(self.device), labels.to(self.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.network(images)
        return self.loss_fn(logits.float(), labels)

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return len(self.history)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One training patch, image ``(1, *patch)`` and labels ``(1, *patch)`` (on the
        training device when augmented), drawn from the run's random state."""
        rng = self.rng
        case = self.cases[rng.integers(len(self.cases))]
        foreground = rng.uniform() < self.config.foreground_fraction
        image, labels = sample_patch(case, self.crop, rng, foreground)
        if self.augment is None:
            return image, labels
        seed = int(rng.integers(2**32))
        return apply_augmentation(self.augment, image.to(self.device), labels.to(self.device), seed)

    def run_epoch(self, should_stop: Callable[[], bool] | None = None) -> float | None:
        """Train one epoch; its mean loss, or None when ``should_stop()`` said stop."""
        config = self.config
        losses = []
        self.network.train()
        try:
            for _ in range(config.iterations_per_epoch):
                if should_stop is not None and should_stop():
                    return None
                batch = [self.sample() for _ in range(config.batch_size)]
                images = torch.stack([b[0] for b in batch])
                labels = torch.stack([b[1] for b in batch])
                self.optimiser.zero_grad(set_to_none=True)
                loss = self._loss(images, labels)
                loss.backward()
                self.optimiser.step()
                self.schedule.step()  # per iteration: warm-up, then per-epoch decay
                losses.append(loss.item())
        finally:
            self.network.eval()
        self.history.append(float(np.mean(losses)))
        return self.history[-1]

    @torch.no_grad()
    def validate(self, patches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
        """Loss and Dice per class (hard, over all ``patches`` together) on fixed held-out
        patches: a cheap per-epoch check, not the final evaluation."""
        self.network.eval()
        losses, overlap, total = [], None, None
        for image, labels in patches:
            images, labels = image[None].to(self.device), labels[None].to(self.device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                logits = self.network(images).float()
            losses.append(float(self.loss_fn(logits, labels)))
            predicted = logits.argmax(1, keepdim=True)
            classes = torch.arange(1, logits.shape[1], device=self.device).view(1, -1, 1, 1, 1)
            p, r = predicted == classes, labels == classes
            counts = ((p & r).sum((0, 2, 3, 4)), (p.sum((0, 2, 3, 4)) + r.sum((0, 2, 3, 4))))
            overlap = counts[0] if overlap is None else overlap + counts[0]
            total = counts[1] if total is None else total + counts[1]
        dice = [float(2 * o / t) if t else 1.0 for o, t in zip(overlap, total, strict=True)]
        return {"loss": float(np.mean(losses)), "dice": dice}

    def state_dict(self) -> dict:
        return {
            "network": self.network.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "schedule": self.schedule.state_dict(),
            "history": list(self.history),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.schedule.load_state_dict(state["schedule"])
        self.history = list(state["history"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])


def validation_patches(
    cases: list[TrainingCase], patch: tuple[int, int, int], seed: int, limit: int = 8
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Up to ``limit`` fixed patches of held-out cases (taking the cases in turn) for
    `Trainer.validate`: every other one centred on foreground, the rest anywhere, so
    that false positives away from the structure (a lesion model's failure at a new site)
    lower the score the job keeps its checkpoint by, not only misses near it."""
    rng = np.random.default_rng(seed)
    padded = [_pad_to(case, patch) for case in cases]
    count = min(limit, 2 * len(padded))
    return [
        sample_patch(padded[i % len(padded)], patch, rng, foreground=(i // len(padded)) % 2 == 0)
        for i in range(count)
    ]


def train(
    network: torch.nn.Module,
    cases: list[TrainingCase],
    config: TrainConfig,
    *,
    on_epoch: Callable[[int, float, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[float]:
    """Train ``network`` in place; return the mean loss of every epoch.

    ``on_epoch(epoch, loss, seconds)`` is called after each epoch; ``should_stop()`` is
    polled between iterations so a cancelled job stops within one iteration.
    """
    trainer = Trainer(network, cases, config)
    while trainer.epoch < config.epochs:
        started = time.perf_counter()
        loss = trainer.run_epoch(should_stop)
        if loss is None:
            break
        if on_epoch is not None:
            on_epoch(trainer.epoch, loss, time.perf_counter() - started)
    return trainer.history
