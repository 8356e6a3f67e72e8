"""Post-processing chosen on held-out cases: the smallest lesion component a network keeps."""

from __future__ import annotations

import numpy as np
import torch

from sitetune.imaging.nifti import save_nifti
from sitetune.training.base import BASE_CARDS, Family
from sitetune.training.datasets import SiteCase
from sitetune.training.postprocessing import (
    MIN_COMPONENT_ML,
    card_min_component,
    choose,
    choose_min_component,
    with_min_component,
)


def test_a_size_replaces_the_cards_only_when_clearly_better():
    # one held-out frame: the margin alone decides
    assert choose({0.0: [0.5], 0.01: [0.6], 0.05: [0.8]}, current=0.01) == 0.05
    assert choose({0.01: [0.6], 0.05: [0.605]}, current=0.01) == 0.01  # within the margin
    assert choose({0.01: [0.5], 0.02: [0.8], 0.05: [0.8]}, current=0.01) == 0.02  # tie: smaller
    assert choose({0.01: [0.5], 0.03: [0.7]}, current=0.03) == 0.03  # nothing beats the card
    # better on every frame: chosen
    assert choose({0.01: [0.5, 0.6, 0.55], 0.05: [0.7, 0.8, 0.75]}, current=0.01) == 0.05
    # better on average only because it clears two frames' false positives while it
    # erases the third frame's only lesion: within one standard error, the card's is kept
    assert choose({0.01: [0.6, 0.6, 0.9], 0.08: [0.9, 0.9, 0.45]}, current=0.01) == 0.01
    # several sizes as good as the best: the smallest of them
    scores = {0.01: [0.5, 0.5, 0.5], 0.03: [0.79, 0.8, 0.8], 0.05: [0.8, 0.8, 0.81]}
    assert choose(scores, current=0.01) == 0.03


def test_only_lesion_labels_get_the_size():
    lesion, heart = BASE_CARDS[Family.FLAIR_LESION], BASE_CARDS[Family.LV_CT]
    assert card_min_component(with_min_component(lesion, 0.05)) == 0.05
    assert card_min_component(lesion) == 0.01  # the card itself is not changed
    assert card_min_component(heart) is None
    assert with_min_component(heart, 0.05).labels == heart.labels  # largest component kept


class _Bright(torch.nn.Module):
    """Calls lesion wherever the normalised intensity exceeds 1 (a 1x1x1 convolution)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, kernel_size=1)
        with torch.no_grad():
            self.conv.weight[:] = torch.tensor([0.0, 5.0]).view(2, 1, 1, 1, 1)
            self.conv.bias[:] = torch.tensor([0.0, -5.0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _case(tmp_path, speckles: int) -> SiteCase:
    """A 48^3 FLAIR-like volume at the card's 1.2 mm: one labelled lesion of ~0.46 mL and
    ``speckles`` unlabelled bright 2x2x2 cubes (0.014 mL each) the network also calls."""
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 0.1, (48, 48, 48)).astype(np.float32)
    grid = np.indices(image.shape)
    lesion = ((grid - np.array([24, 24, 24])[:, None, None, None]) ** 2).sum(0) <= 16
    image[lesion] = 10.0
    for i in range(speckles):
        x, y = 6 + 6 * i, 8
        image[x : x + 2, y : y + 2, 6:8] = 10.0
    affine = np.diag([1.2, 1.2, 1.2, 1.0])
    image_path = save_nifti(image, tmp_path / f"image{speckles}.nii.gz", affine=affine)
    label_path = save_nifti(lesion.astype(np.uint8), tmp_path / f"label{speckles}.nii.gz",
                            affine=affine)  # fmt: skip
    return SiteCase(f"case{speckles}", image_path, label_path, (0,))


def test_a_network_calling_small_false_lesions_keeps_the_size_that_drops_them(tmp_path):
    card = BASE_CARDS[Family.FLAIR_LESION]
    choice = choose_min_component([_case(tmp_path, speckles=6)], card, _Bright())
    scores = {row["min_component_ml"]: row for row in choice["scores"]}
    assert sorted(scores) == sorted(MIN_COMPONENT_ML)  # the card's 0.01 is among them
    assert choice["card_min_component_ml"] == 0.01 and choice["frames"] == 1
    # at the card's 0.01 mL the six 0.014 mL speckles are kept: 1 of 7 lesions true
    assert round(scores[0.01]["lesion_f1"], 2) == round(2 * (1 / 7) / (1 + 1 / 7), 2)
    assert scores[0.02]["lesion_f1"] == 1.0 and scores[0.02]["dice"] > 0.95
    assert choice["min_component_ml"] == 0.02  # the smallest size that drops them
    assert "0.01 mL" in choice["because"]
    assert scores[0.2]["lesion_f1"] == 1.0  # the 0.46 mL lesion survives every size


def test_a_clean_network_keeps_the_cards_size(tmp_path):
    card = BASE_CARDS[Family.FLAIR_LESION]
    choice = choose_min_component([_case(tmp_path, speckles=0)], card, _Bright())
    assert choice["min_component_ml"] == 0.01
    assert choice["because"].startswith("no size was clearly better")


def test_a_model_without_lesion_labels_chooses_nothing(tmp_path):
    assert choose_min_component([], BASE_CARDS[Family.LV_CT], _Bright()) is None
