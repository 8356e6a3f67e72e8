"""The supervised training loop shared by base-model training and site fine-tuning.

Patches are drawn from preprocessed cases held in memory (network grid), a fraction
of them centred on foreground voxels; MONAI's Dice + cross-entropy loss; Adam with
exponential learning-rate decay per epoch; deterministic given the seed (CPU).
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
    from monai.losses import DiceCELoss

    if not cases:
        raise ValueError("no training cases")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    cases = [_pad_to(c, config.patch_size) for c in cases]
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma=config.lr_decay)
    history = []
    network.train()
    for epoch in range(config.epochs):
        started, losses = time.perf_counter(), []
        for _ in range(config.iterations_per_epoch):
            if should_stop is not None and should_stop():
                network.eval()
                return history
            batch = [
                sample_patch(
                    cases[rng.integers(len(cases))],
                    config.patch_size,
                    rng,
                    rng.uniform() < config.foreground_fraction,
                )
                for _ in range(config.batch_size)
            ]
            images = torch.stack([b[0] for b in batch])
            labels = torch.stack([b[1] for b in batch])
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(network(images), labels)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        schedule.step()
        history.append(float(np.mean(losses)))
        if on_epoch is not None:
            on_epoch(epoch + 1, history[-1], time.perf_counter() - started)
    network.eval()
    return history
