"""Inputs a model cannot meaningfully process are refused before inference, by the card."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from sitetune.analysis.admission import check_input
from sitetune.errors import InvalidInput
from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.load import load_volume
from sitetune.imaging.volume import PhaseInfo, Volume
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


def test_the_memory_estimate_grows_with_voxels_phases_and_classes():
    from sitetune.analysis.admission import estimated_bytes

    small = estimated_bytes(_volume((64, 64, 64), (1.0, 1.0, 1.0)), LV)
    large = estimated_bytes(_volume((256, 256, 256), (1.0, 1.0, 1.0)), LV)
    assert 50 < large / small < 80  # 64x the voxels
    four_d = Volume(np.zeros((64, 64, 64, 4), np.float32), np.eye(4), modality="CT",
                    phases=tuple(PhaseInfo(t) for t in range(4)))  # fmt: skip
    assert estimated_bytes(four_d, LV) > small
    assert large > 256**3 * 4 * LV.out_channels  # at least the resampled probabilities


def test_the_memory_gate_refuses_the_impossible_queues_then_503s():
    import threading
    import time

    from sitetune.analysis.admission import MemoryGate
    from sitetune.errors import PayloadTooLarge, ServiceBusy

    gate = MemoryGate(100, wait_seconds=0.3)
    with pytest.raises(PayloadTooLarge) as too_big, gate.reserve(101, "this analysis"):
        pass
    assert too_big.value.code == "over_memory_budget"
    with gate.reserve(60, "a"):
        started = time.perf_counter()
        with pytest.raises(ServiceBusy) as busy, gate.reserve(60, "b"):
            pass
        assert time.perf_counter() - started >= 0.25 and busy.value.retry_after >= 1
        with gate.reserve(40, "c"):  # fits beside
            assert gate.used == 100
    waiting = []

    def later():
        with gate.reserve(100, "e"):
            waiting.append(gate.used)

    with gate.reserve(50, "d"):
        thread = threading.Thread(target=later)
        thread.start()
        time.sleep(0.1)
        assert waiting == []  # queued until d ends
    thread.join(2)
    assert waiting == [100]
    with gate.reserve(100, "f"):  # everything was released
        assert gate.used == 100
    assert gate.used == 0
