"""ED/ES choice, per-phase volumes and the thickness map of the LV report."""

from __future__ import annotations

import numpy as np
import pytest

from sitetune.errors import InvalidInput
from sitetune.imaging.phantoms.analytic import spherical_shell
from sitetune.imaging.volume import PhaseInfo
from sitetune.measure.labels import as_label_map
from sitetune.measure.thickness import wall_thickness
from sitetune.measure.ventricle import LV_LABELS, choose_phases, measure_ventricle


def _phases(percentages=None, triggers=None, n=5):
    return [
        PhaseInfo(
            t,
            nominal_percentage=None if percentages is None else percentages[t],
            trigger_time_ms=None if triggers is None else triggers[t],
        )
        for t in range(n)
    ]


VOLUMES = [120.0, 100.0, 60.0, 80.0, 110.0]


def test_volume_curve_picks_largest_and_smallest_blood_pool():
    choice = choose_phases(_phases(), VOLUMES, [True] * 5)
    assert (choice.ed, choice.es) == (0, 2)
    assert choice.ed_source == "blood_pool_volume_max"
    assert choice.es_source == "blood_pool_volume_min"


def test_r_wave_phase_from_dicom_tags_is_end_diastole_even_if_not_largest():
    # The 90 % frame is within 10 % of the R wave: it is ED although frame 0 is larger.
    choice = choose_phases(_phases([20, 40, 60, 80, 90]), VOLUMES, [True] * 5)
    assert choice.ed == 4 and choice.ed_source == "dicom:nominal_percentage_of_cardiac_phase"
    assert choice.es == 2
    # No frame near the R wave: the tags do not say, the volume curve does.
    choice = choose_phases(_phases([20, 30, 40, 50, 60]), VOLUMES, [True] * 5)
    assert (choice.ed, choice.ed_source) == (0, "blood_pool_volume_max")
    choice = choose_phases(_phases(triggers=[300, 40, 500, 600, 700]), VOLUMES, [True] * 5)
    assert (choice.ed, choice.ed_source) == (1, "dicom:trigger_time")


def test_unlabelled_phases_are_never_chosen_and_requests_win():
    labelled = [True, False, False, True, True]  # sparse ED/ES labelling
    choice = choose_phases(_phases(), [120.0, 0.0, 0.0, 80.0, 110.0], labelled)
    assert (choice.ed, choice.es) == (0, 3)
    choice = choose_phases(_phases(), VOLUMES, [True] * 5, ed=1, es=4)
    assert (choice.ed, choice.es, choice.ed_source) == (1, 4, "request")
    with pytest.raises(InvalidInput, match="not a phase"):
        choose_phases(_phases(), VOLUMES, [True] * 5, es=7)
    with pytest.raises(InvalidInput, match="ES phase 1 has no blood pool"):
        choose_phases(_phases(), VOLUMES, labelled, es=1)


def test_4d_report_measures_ed_and_es_and_writes_their_maps():
    small = spherical_shell(6.0, 9.0, rng=np.random.default_rng(0))
    big = spherical_shell(8.0, 10.0, rng=np.random.default_rng(0))
    shape = np.maximum(small.labels.shape, big.labels.shape)
    frames = np.zeros((*shape, 3), np.uint8)
    frames[: big.labels.shape[0], : big.labels.shape[1], : big.labels.shape[2], 0] = (
        big.labels.array
    )
    frames[: small.labels.shape[0], : small.labels.shape[1], : small.labels.shape[2], 2] = (
        small.labels.array
    )
    report = measure_ventricle(frames, np.eye(4)).to_json()
    assert report["ed"]["index"] == 0 and report["es"]["index"] == 2
    assert report["phases"][1]["thickness_mm"] is None  # unlabelled: nothing measured
    direct = wall_thickness(frames[..., 2], (1, 1, 1)).stats
    assert report["es"]["thickness_mm"]["median"] == pytest.approx(direct["median"], abs=1e-3)
    expected = 100 * (direct["median"] - report["ed"]["thickness_mm"]["median"])
    assert report["thickening_pct"] == pytest.approx(
        expected / report["ed"]["thickness_mm"]["median"], abs=0.05
    )
    blood_pool = (frames[..., 0] == 1).sum() / 1000
    assert report["ed"]["volumes_ml"]["blood_pool"] == pytest.approx(blood_pool, abs=1e-3)


def test_phase_without_myocardium_is_named_in_the_error():
    shell = spherical_shell(6.0, 9.0).labels.array
    frames = np.stack([shell, np.where(shell == 2, 0, shell)], -1).astype(np.uint8)
    with pytest.raises(InvalidInput, match="phase 1: the mask has no myocardium"):
        measure_ventricle(frames, np.eye(4), ed=0, es=1)


def test_label_maps_with_unexpected_values_are_refused_by_name():
    with pytest.raises(InvalidInput, match=r"unexpected label values \[3, 7\]"):
        as_label_map(np.array([0, 1, 2, 3, 7]), LV_LABELS)
    with pytest.raises(InvalidInput, match="non-integer"):
        as_label_map(np.array([0.0, 0.5]), LV_LABELS)
    assert as_label_map(np.array([0.0, 1.0, 2.0]), LV_LABELS).dtype == np.uint8


def test_thickness_agreement_pairs_ed_and_es_statistics():
    from sitetune.measure.ventricle import PhaseChoice, VentricleReport, thickness_agreement

    def report(ed_median, es_median, es_index=2):
        phases = [
            {"index": t, "role": None, "thickness_mm": None, "volumes_ml": {}} for t in range(3)
        ]
        for t, median in ((0, ed_median), (es_index, es_median)):
            phases[t]["thickness_mm"] = {"median": median, "p95": 2 * median, "max": 3 * median}
        return VentricleReport(phases, PhaseChoice(0, es_index, "x", "x"), np.zeros(1), {})

    truth = [report(8.0, 11.0), report(9.0, 12.0), report(10.0, 14.0)]
    predicted = [report(8.5, 11.5), report(9.5, 12.5), report(10.5, 14.5, es_index=1)]
    agreement = thickness_agreement(predicted, truth)
    assert agreement["ed_median"]["pearson_r"] == pytest.approx(1.0)
    assert agreement["ed_median"]["bias_mm"] == pytest.approx(0.5)
    assert agreement["ed_max"]["mean_abs_diff_mm"] == pytest.approx(1.5)
    assert agreement["ed_phase_correct"] == 1.0
    assert agreement["es_phase_correct"] == pytest.approx(0.667, abs=1e-3)
