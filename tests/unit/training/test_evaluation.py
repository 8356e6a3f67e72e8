"""The fine-tune evaluation segments as the deployment serves: its sliding-window settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sitetune.imaging.nifti import save_nifti
from sitetune.models.networks import build_network
from sitetune.models.serving import InferenceSettings
from sitetune.training import evaluation
from sitetune.training.base import BASE_CARDS, Family
from sitetune.training.datasets import SiteCase


def test_evaluation_uses_the_deployments_inference_settings(
    small_cardiac_3d, tmp_path, monkeypatch
):
    card = BASE_CARDS[Family.LV_CT]
    image = save_nifti(small_cardiac_3d.image.array.astype(np.int16), tmp_path / "i.nii.gz",
                       affine=small_cardiac_3d.image.affine)  # fmt: skip
    label = save_nifti(small_cardiac_3d.labels.array.astype(np.uint8), tmp_path / "l.nii.gz",
                       affine=small_cardiac_3d.labels.affine)  # fmt: skip
    case = SiteCase("case", image, label, (0,))
    seen = []
    real = evaluation.segment_frame

    def spy(array, affine, card, engine, settings, timings):  # the real segmentation, watched
        seen.append(settings)
        return real(array, affine, card, engine, settings, timings)

    monkeypatch.setattr(evaluation, "segment_frame", spy)
    torch.manual_seed(0)
    network = build_network(card)
    deployment = InferenceSettings(overlap=0.5, sw_batch_size=2)
    metrics = evaluation.evaluate_networks([case], card, {"candidate": network},
                                           settings=deployment)  # fmt: skip
    assert seen == [deployment]
    assert set(metrics["candidate"]["dice"]) == {"LV blood pool", "LV myocardium"}


def test_evaluation_measures_by_the_cards_coded_labels_not_their_values(small_cardiac_3d):
    """A card emitting 1 = myocardium, 2 = blood pool is evaluated as an LV model and its
    label maps measured with the structures where the thickness solver expects them."""
    card = BASE_CARDS[Family.LV_CT]
    swapped_labels = [label.model_copy(update={"value": 3 - label.value}) for label in card.labels]
    swapped = card.model_copy(update={"labels": swapped_labels})
    standard = small_cardiac_3d.labels.array.astype(np.uint8)
    as_emitted = np.where(standard > 0, 3 - standard, 0).astype(np.uint8)
    assert evaluation._is_lv(swapped) and not evaluation._is_lesion(swapped)
    assert np.array_equal(evaluation._lv(as_emitted, swapped), standard)


def test_volume_spearman_ranks_cases_by_lesion_load():
    rows = [{"predicted_ml": p, "reference_ml": r} for p, r in [(1.0, 0.5), (3.0, 2.0), (2.0, 1.0)]]
    assert evaluation.volume_spearman(rows) == pytest.approx(1.0)
    rows[0]["predicted_ml"] = 9.0  # the smallest load predicted as the largest
    assert evaluation.volume_spearman(rows) == pytest.approx(-0.5)
    assert evaluation.volume_spearman(rows[:2]) is None  # too few to rank
    same = [dict(r, predicted_ml=0.0) for r in rows]  # a model that finds nothing
    assert evaluation.volume_spearman(same) is None
