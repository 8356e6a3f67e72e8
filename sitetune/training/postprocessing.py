"""Post-processing chosen on held-out cases: the smallest lesion component a network keeps.

A lesion model's card drops predicted components smaller than ``min_component_ml``
(`sitetune.models.inference.clean_components`). The size that suits a network depends on
the network: one fine-tuned on a few cases of a new site makes small false-positive
components that one trained on many cases does not (`bench/transfer.py`: at the base
card's 0.01 mL, all@5 at site B has lesion precision 0.24 against the in-domain ceiling's
0.61). As nnU-Net chooses its post-processing on its validation folds, a fine-tune job
chooses the size on its held-out split and writes it into the candidate's card:

- each held-out case is segmented once (softmax kept), then post-processed at every size
  in `MIN_COMPONENT_ML` and at the card's own;
- the score of a size on a frame is (lesion Dice + lesion F1) / 2
  (`sitetune.measure.metrics.wmh_metrics`: the voxels and the lesion count both count);
- the size is chosen by the one-standard-error rule (Breiman et al. 1984, *Classification
  and Regression Trees*; Hastie et al., *Elements of Statistical Learning* §7.10), pointed at
  the card: a size is as good as the best-scoring one when its mean paired shortfall over
  the held-out frames is within one standard error of that shortfall (and at least within
  `MARGIN`); the card's size is kept when it is as good as the best, else the smallest size
  that is. A held-out split is a few cases: a size that wins on average because it clears
  one case's false positives, while it erases another case's only lesion, is not clearly
  better and does not replace the card's (`bench/README.md`: choosing the plain best on 3
  cases let 10-case networks drop a held-out case's only lesion).

Only models whose coded labels serve the lesion volume (`Task.LESION_VOLUME`) are
chosen for; their other labels, and every other model, keep their cards' cleanup.
Hand-written: MONAI's ``RemoveSmallObjects`` removes by voxel count on one grid and
chooses nothing; nnU-Net's ``determine_postprocessing`` judges only largest-component
removal by Dice.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sitetune.analysis.tasks import Task, measured_task, to_measured_labels
from sitetune.imaging.load import load_volume
from sitetune.measure.metrics import wmh_metrics
from sitetune.models.card import ModelCard
from sitetune.models.inference import InferenceSettings, postprocess, probabilities
from sitetune.models.preprocess import to_network_grid
from sitetune.training.datasets import SiteCase
from sitetune.training.evaluation import network_engine

MIN_COMPONENT_ML = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2)  # sizes tried (mL)
MARGIN = 0.01  # a shortfall to the best this small always counts as good as the best


def with_min_component(card: ModelCard, size_ml: float) -> ModelCard:
    """A copy of ``card`` whose lesion labels (not kept as one largest component) drop
    components smaller than ``size_ml``."""
    labels = [
        label
        if label.keep_largest_component
        else label.model_copy(update={"min_component_ml": float(size_ml)})
        for label in card.labels
    ]
    return card.model_copy(update={"labels": labels})


def card_min_component(card: ModelCard) -> float | None:
    """The card's smallest kept lesion component (mL); None when no label is a lesion."""
    sizes = [label.min_component_ml for label in card.labels if not label.keep_largest_component]
    return max(sizes) if sizes else None


def choose(scores: dict[float, list[float]], current: float, margin: float = MARGIN) -> float:
    """The size to keep from ``{size_ml: [score per held-out frame]}`` (``current``, the
    card's, among them; frames in the same order for every size), by the one-standard-error
    rule pointed at the card (module docstring)."""
    means = {size: float(np.mean(values)) for size, values in scores.items()}
    best = min(means, key=lambda size: (-round(means[size], 6), size))

    def as_good(size: float) -> bool:
        shortfall = np.asarray(scores[best], float) - np.asarray(scores[size], float)
        error = shortfall.std(ddof=1) / np.sqrt(shortfall.size) if shortfall.size > 1 else 0.0
        return float(shortfall.mean()) <= max(float(error), margin) + 1e-9

    if as_good(current):
        return current
    return min(size for size in scores if as_good(size))


def choose_min_component(
    cases: list[SiteCase],
    card: ModelCard,
    network: torch.nn.Module,
    *,
    device: str = "cpu",
    settings: InferenceSettings | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict | None:
    """Choose ``network``'s smallest kept lesion component on held-out ``cases`` (module
    docstring). Returns None for a model without lesion labels, else ``{"min_component_ml":
    chosen, "card_min_component_ml": the card's, "scores": [{"min_component_ml", "score",
    "dice", "lesion_f1"}, ...], "frames": n, "because": why}``."""
    current = card_min_component(card)
    if current is None or measured_task(card) is not Task.LESION_VOLUME:
        return None
    settings = settings or InferenceSettings()
    sizes = sorted({*MIN_COMPONENT_ML, current})
    cards = {size: with_min_component(card, size) for size in sizes}
    rows: dict[float, list[dict]] = {size: [] for size in sizes}
    with tempfile.TemporaryDirectory() as tmp:
        engine = network_engine(network.eval(), card, device, Path(tmp) / "network.onnx")
        for case in cases:
            image, labels = load_volume(case.image), load_volume(case.label)
            for t in case.labelled_phases:
                if should_stop is not None and should_stop():
                    raise InterruptedError("post-processing choice stopped")
                array = image.phase(t).array
                truth = to_measured_labels(labels.phase(t).array, card, Task.LESION_VOLUME) == 1
                tensor, grid = to_network_grid(array, image.affine, card)
                probs = probabilities(engine, tensor, card, settings)
                for size in sizes:
                    frame = postprocess(probs, grid, image.affine, array.shape[:3], cards[size])
                    found = to_measured_labels(frame, card, Task.LESION_VOLUME) == 1
                    rows[size].append(wmh_metrics(found, truth, labels.affine))
    frame_scores = {size: [(r["dice"] + r["lesion_f1"]) / 2 for r in rows[size]] for size in sizes}
    table = []
    for size in sizes:
        dice = float(np.mean([r["dice"] for r in rows[size]]))
        f1 = float(np.mean([r["lesion_f1"] for r in rows[size]]))
        table.append({"min_component_ml": size, "score": round((dice + f1) / 2, 4),
                      "dice": round(dice, 4), "lesion_f1": round(f1, 4)})  # fmt: skip
    scores = {row["min_component_ml"]: row["score"] for row in table}
    chosen = choose(frame_scores, current)
    best = max(sizes, key=lambda size: (scores[size], -size))
    if chosen != current:
        because = (
            f"held-out (Dice + lesion F1) / 2 {scores[chosen]:.4f} against {scores[current]:.4f} "
            f"at the card's {current} mL; the smallest size within one standard error of the "
            f"best ({best} mL, {scores[best]:.4f})"
        )
    else:
        because = (
            f"no size was clearly better than the card's {current} mL ({scores[current]:.4f}; "
            f"best {best} mL, {scores[best]:.4f}, within one standard error or {MARGIN})"
        )
    return {
        "min_component_ml": chosen,
        "card_min_component_ml": current,
        "scores": table,
        "frames": len(rows[current]),
        "because": because,
    }
