"""Tiny labelled cases for training tests: a block per label (nested, smaller for higher
label values) in a noisy 20 x 20 x 18 image, small enough to train on in seconds."""

from __future__ import annotations

import numpy as np
import torch

from sitetune.training.loop import TrainingCase


def tiny_cases(values: tuple[int, ...], n: int = 2) -> list[TrainingCase]:
    """``n`` cases with labels ``values``, the noise drawn from one seeded generator."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        labels = np.zeros((20, 20, 18), np.uint8)
        for k, value in enumerate(values):
            labels[6 + 2 * k : 14 - 2 * k, 5:13, 4:12] = value
        image = labels + rng.normal(0, 0.3, labels.shape)
        out.append(TrainingCase(torch.from_numpy(image.astype(np.float32))[None], labels))
    return out
