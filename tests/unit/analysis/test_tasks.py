"""Tasks follow the card's coded labels, not its label values."""

from __future__ import annotations

import numpy as np
import pytest

from sitetune.analysis.tasks import Task, check_task, measured_task, to_measured_labels
from sitetune.errors import InputError
from sitetune.measure.ventricle import measure_ventricle
from sitetune.models.card import Label
from sitetune.training.base import BASE_CARDS, Family

LV = BASE_CARDS[Family.LV_CT]
FLAIR = BASE_CARDS[Family.FLAIR_LESION]


def _reversed(card):
    """The lv-ct card with its label values the other way round (1 = myocardium)."""
    labels = [Label(value=1, name="LV myocardium"), Label(value=2, name="LV blood pool")]
    return card.model_copy(update={"labels": labels})


def test_the_measured_task_comes_from_the_structures():
    assert measured_task(LV) is Task.WALL_THICKNESS
    assert measured_task(_reversed(LV)) is Task.WALL_THICKNESS
    assert measured_task(FLAIR) is Task.LESION_VOLUME
    only_pool = LV.model_copy(update={"labels": [Label(value=1, name="LV blood pool")]})
    assert measured_task(only_pool) is Task.SEGMENT


def test_a_card_without_the_structures_is_refused_for_the_task_naming_them():
    with pytest.raises(InputError, match="LV blood pool, LV myocardium") as caught:
        check_task(FLAIR, Task.WALL_THICKNESS, "flair-lesion:1")
    assert caught.value.code == "wrong_model"
    check_task(FLAIR, Task.SEGMENT, "flair-lesion:1")  # anything can be segmented


def test_a_reversed_card_is_measured_as_the_canonical_one(small_cardiac_3d):
    truth = small_cardiac_3d.labels.array.astype(np.uint8)  # 1 blood pool, 2 myocardium
    swapped = np.choose(truth, [0, 2, 1]).astype(np.uint8)  # as the reversed model emits it
    measured = to_measured_labels(swapped, _reversed(LV), Task.WALL_THICKNESS)
    assert np.array_equal(measured, truth)
    assert to_measured_labels(truth, LV, Task.WALL_THICKNESS) is truth  # no copy needed
    affine = small_cardiac_3d.labels.affine
    direct = measure_ventricle(truth, affine, surfaces="smoothed").to_json()
    mapped = measure_ventricle(measured, affine, surfaces="smoothed").to_json()
    assert mapped["phases"] == direct["phases"]
