"""Inputs a model cannot meaningfully process are refused before inference, by the card."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from sitetune.analysis.admission import check_input
from sitetune.errors import InvalidInput
from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.load import load_volume
from sitetune.imaging.volume import Volume
from sitetune.models.card import InputLimits
from sitetune.training.base import BASE_CARDS, Family

LV = BASE_CARDS[Family.LV_CT]  # patch 64 at 1.5 mm: a 96 mm field of view, 24 mm minimum


def _volume(shape, spacing, modality="CT"):
    return Volume(np.zeros(shape, np.float32), np.diag([*spacing, 1.0]), modality=modality)


def _refused(volume, card=LV) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        check_input(volume, card, "lv-ct:1")
    return caught.value


def test_a_volume_within_the_limits_passes():
    check_input(_volume((64, 64, 20), (1.0, 1.0, 2.5)), LV, "lv-ct:1")
    check_input(_volume((64, 64, 20), (1.0, 1.0, 2.5), modality=None), LV, "lv-ct:1")  # NIfTI


def test_a_single_slice_is_refused_saying_so():
    error = _refused(_volume((128, 128, 1), (0.7, 0.7, 1.0)))
    assert error.code == "single_slice" and "[128, 128, 1]" in error.message


def test_a_stack_far_thinner_than_the_field_of_view_is_refused_with_the_numbers():
    error = _refused(_volume((512, 512, 2), (0.4, 0.4, 10.0)))  # 20 mm < 24 mm
    assert error.code == "too_thin"
    assert "2 planes x 10.00 mm = 20.0 mm" in error.message and "24 mm" in error.message
    assert _refused(_volume((512, 512, 2), (0.4, 0.4, 20.0))).code == "too_thin"  # 2 < 3 planes


def test_the_card_sets_the_limits():
    strict = LV.model_copy(update={"input_limits": InputLimits(min_extent_mm=50.0)})
    assert _refused(_volume((64, 64, 16), (1.0, 1.0, 3.0)), strict).code == "too_thin"
    check_input(_volume((64, 64, 16), (1.0, 1.0, 3.0)), LV, "lv-ct:1")


def test_the_wrong_modality_is_refused():
    error = _refused(_volume((64, 64, 20), (1.0, 1.0, 2.5), modality="MR"))
    assert error.code == "wrong_modality" and "reads CT" in error.message


def test_a_localizer_series_is_refused(small_cardiac_3d, tmp_path):
    for path in write_dicom_series(small_cardiac_3d.image, tmp_path):
        ds = pydicom.dcmread(path)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.save_as(path)
    assert _refused(load_volume(tmp_path)).code == "localizer"
    lenient = LV.model_copy(update={"input_limits": InputLimits(refuse_localizers=False)})
    check_input(load_volume(tmp_path), lenient, "lv-ct:1")
