"""The supervised training loop shared by base-model training and site fine-tuning.

Patches are drawn from preprocessed cases held in memory (network grid), a fraction
of them centred on foreground voxels; MONAI's Dice + cross-entropy loss; Adam with
exponential learning-rate decay per epoch; deterministic given the seed (CPU). On a
GPU the forward pass runs under bf16 autocast (mixed precision; bf16 needs no loss
scaling).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

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
    foreground_fraction: float = 0.67
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


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
        self.cases = [_pad_to(c, config.patch_size) for c in cases]
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        trainable = [p for p in network.parameters() if p.requires_grad]
        self.optimiser = torch.optim.Adam(trainable, lr=config.learning_rate)
        self.schedule = torch.optim.lr_scheduler.ExponentialLR(self.optimiser, config.lr_decay)
        self.history: list[float] = []
        self.device = next(network.parameters()).device
        self.autocast = self.device.type == "cuda"

    def _loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images, labels = images.to(self.device), labels.to(self.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.network(images)
        return self.loss_fn(logits.float(), labels)

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return len(self.history)

    def run_epoch(self, should_stop: Callable[[], bool] | None = None) -> float | None:
        """Train one epoch; its mean loss, or None when ``should_stop()`` said stop."""
        config, rng = self.config, self.rng
        losses = []
        self.network.train()
        try:
            for _ in range(config.iterations_per_epoch):
                if should_stop is not None and should_stop():
                    return None
                batch = [
                    sample_patch(
                        self.cases[rng.integers(len(self.cases))],
                        config.patch_size,
                        rng,
                        rng.uniform() < config.foreground_fraction,
                    )
                    for _ in range(config.batch_size)
                ]
                images = torch.stack([b[0] for b in batch])
                labels = torch.stack([b[1] for b in batch])
                self.optimiser.zero_grad(set_to_none=True)
                loss = self._loss(images, labels)
                loss.backward()
                self.optimiser.step()
                losses.append(loss.item())
        finally:
            self.network.eval()
        self.schedule.step()
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
    """Up to ``limit`` fixed foreground-centred patches of held-out cases (taking the
    cases in turn) for `Trainer.validate`."""
    rng = np.random.default_rng(seed)
    padded = [_pad_to(case, patch) for case in cases]
    count = min(limit, 2 * len(padded))
    return [sample_patch(padded[i % len(padded)], patch, rng, True) for i in range(count)]


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
