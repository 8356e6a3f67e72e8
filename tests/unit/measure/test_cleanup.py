"""Cleaning an LV label map before measuring it, and a maximum no artefact can set: what a
network gets wrong (a myocardium blob inside the cavity, a fragment elsewhere, holes, a
spike on the wall) must not move the reported wall thickness."""

from __future__ import annotations

import numpy as np

from sitetune.imaging.phantoms.analytic import spherical_shell
from sitetune.measure.cleanup import clean_lv
from sitetune.measure.labels import BLOOD_POOL, MYOCARDIUM
from sitetune.measure.thickness import wall_thickness
from sitetune.measure.ventricle import measure_ventricle


def _shell():
    phantom = spherical_shell(14.0, 22.0, margin_mm=12.0)  # an 8 mm wall, 1 mm voxels
    return phantom.labels.array.copy(), phantom.labels.affine, phantom


def test_blobs_fragments_stray_blood_and_holes_are_corrected_and_reported():
    labels, _, _ = _shell()
    centre = np.array(labels.shape) // 2
    messy = labels.copy()
    messy[tuple(slice(c - 2, c + 2) for c in centre)] = MYOCARDIUM  # 64-voxel blob in the cavity
    messy[2:5, 2:5, 2:5] = MYOCARDIUM  # a fragment in a corner: 27 voxels
    messy[-5:-2, 2:5, 2:5] = BLOOD_POOL  # stray blood pool far away: 27 voxels
    hole = centre + np.array([18, 0, 0])  # mid-wall (radii 14-22 mm)
    assert (labels[hole[0] - 1 : hole[0] + 2, hole[1] - 1 : hole[1] + 2,
                   hole[2] - 1 : hole[2] + 2] == MYOCARDIUM).all(), "deep in the wall"  # fmt: skip
    messy[tuple(hole)] = 0
    cleaned, report = clean_lv(messy, voxel_ml=0.001)
    assert np.array_equal(cleaned, labels), "exactly the clean shell again"
    assert report["myocardium_in_cavity"] == {"voxels": 64, "ml": 0.064}
    assert report["myocardium_fragments"]["voxels"] == 27
    assert report["blood_pool_fragments"]["voxels"] == 27
    assert report["holes_filled"]["voxels"] == 1
    assert np.array_equal(clean_lv(labels, 0.001)[0], labels), "a clean map is left alone"


def test_a_spike_on_the_wall_sets_the_peak_but_not_the_reported_maximum():
    labels, _, phantom = _shell()
    spacing = phantom.labels.spacing
    clean = wall_thickness(labels, spacing).stats
    spiked = labels.copy()
    centre = np.array(labels.shape) // 2
    spiked[
        centre[0] - 1 : centre[0] + 2, centre[1] - 1 : centre[1] + 2, centre[2] - 14 : centre[2] - 5
    ] = MYOCARDIUM  # a 3 x 3 x 9 mm bar into the cavity
    stats = wall_thickness(spiked, spacing).stats
    assert stats["peak"] > clean["peak"] + 4, "the spike is the thickest place"
    assert abs(stats["max"] - clean["max"]) < 0.3, "but the reported maximum does not move"
    assert abs(clean["max"] - phantom.thickness_mm) < 0.6


def test_the_ventricle_report_measures_the_cleaned_frame_and_says_what_changed():
    labels, affine, _ = _shell()
    centre = np.array(labels.shape) // 2
    blob = labels.copy()
    blob[tuple(slice(c - 3, c + 3) for c in centre)] = MYOCARDIUM  # inside the cavity
    clean = measure_ventricle(labels, affine).to_json()
    report = measure_ventricle(blob, affine).to_json()
    assert report["phases"][0]["thickness_mm"] == clean["phases"][0]["thickness_mm"]
    assert report["method"]["cleanup"]["phases"]["0"]["myocardium_in_cavity"]["voxels"] == 216
    raw = measure_ventricle(blob, affine, clean=False).to_json()
    assert (
        raw["phases"][0]["volumes_ml"]["myocardium"]
        > clean["phases"][0]["volumes_ml"]["myocardium"]
    )
    assert "99th percentile" in report["method"]["max_definition"]


def test_segments_that_cannot_be_cut_never_cost_the_global_measurement():
    """An LV whose long axis is the world's anterior direction has no circumferential
    origin without an RV: no segments, the reason in ``axis``, the rest measured."""
    labels = np.zeros((40, 60, 40), np.uint8)
    x, y, z = np.meshgrid(*(np.arange(n) for n in labels.shape), indexing="ij")
    r = np.hypot(x - 20, z - 20)
    labels[(r < 14) & (y > 8) & (y < 52)] = MYOCARDIUM
    labels[(r < 8) & (y > 14) & (y < 52)] = BLOOD_POOL  # the apex closed at low y
    report = measure_ventricle(labels, np.eye(4)).to_json()
    assert report["phases"][0]["thickness_mm"]["median"] > 0
    assert report["segments"] is None and "no AHA segments" in report["axis"]["error"]
