"""Phantoms: deterministic, anatomically sensible, with sites that really differ."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.phantoms import (
    brain_phantom,
    cardiac_phantom,
    cylindrical_shell,
    site_profile,
    slab,
    spherical_shell,
)
from tests.conftest import SMALL_SPACING, dciodvfy_errors


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture(scope="module")
def cardiac_4d_a():
    return cardiac_phantom(21, "A", phases=10)


@pytest.fixture(scope="module")
def cardiac_b():
    return cardiac_phantom(21, "B", phases=1)


def test_same_seed_same_case_other_seed_other_case():
    a = cardiac_phantom(5, "A", spacing=SMALL_SPACING)
    b = cardiac_phantom(5, "A", spacing=SMALL_SPACING)
    c = cardiac_phantom(6, "A", spacing=SMALL_SPACING)
    np.testing.assert_array_equal(a.image.array, b.image.array)
    np.testing.assert_array_equal(a.labels.array, b.labels.array)
    assert not np.array_equal(a.labels.array, c.labels.array)


def test_cardiac_cycle_has_ed_largest_es_smallest_and_wall_thickening(cardiac_4d_a):
    case = cardiac_4d_a
    labels = case.labels.array
    assert set(np.unique(labels)) == {0, 1, 2}
    voxel_ml = case.labels.voxel_volume_ml
    blood = np.array([(labels[..., t] == 1).sum() for t in range(10)]) * voxel_ml
    muscle = np.array([(labels[..., t] == 2).sum() for t in range(10)]) * voxel_ml
    assert int(np.argmax(blood)) == case.ed_phase == 0
    assert int(np.argmin(blood)) == case.es_phase == 4
    assert 1 - blood[4] / blood[0] > 0.3  # ejection fraction above 30 %
    assert np.ptp(muscle) / muscle.mean() < 0.15  # the muscle is conserved...

    # ...so the same muscle wrapped around a smaller cavity is thicker: compare the mean
    # depth of myocardium voxels below the epicardium (distance to the non-LV outside).
    def mean_depth(t):
        outside = labels[..., t] == 0
        return ndimage.distance_transform_edt(~outside)[labels[..., t] == 2].mean()

    assert mean_depth(4) > 1.15 * mean_depth(0)


def test_cardiac_base_is_open_onto_bright_blood_and_distractors_are_bright(cardiac_4d_a):
    image, labels = cardiac_4d_a.image.array[..., 0], cardiac_4d_a.labels.array[..., 0]
    blood = labels == 1
    touching = ndimage.binary_dilation(blood) & (labels == 0)
    assert touching.sum() > 50  # the blood pool meets unlabelled voxels at the base
    assert np.median(image[touching]) > 250  # ...which are atrial / aortic blood
    bright_unlabelled = (image > 300) & (labels == 0)
    assert bright_unlabelled.sum() > 0.5 * blood.sum()  # RV, LA, aorta compete with the LV


def test_site_b_differs_as_documented(cardiac_4d_a, cardiac_b):
    a, b = site_profile("lv-ct", "A"), site_profile("lv-ct", "B")
    assert cardiac_b.image.spacing == pytest.approx(b.spacing_mm)
    assert b.spacing_mm[2] > 2 * a.spacing_mm[2] and b.noise_sd > 2 * a.noise_sd
    contrast_a = np.median(cardiac_4d_a.image.array[..., 0][cardiac_4d_a.labels.array[..., 0] == 1])
    contrast_b = np.median(cardiac_b.image.array[cardiac_b.labels.array == 1])
    assert contrast_a - contrast_b > 80  # weaker enhancement at B


def test_a_rule_learnt_on_site_a_is_measurably_worse_on_site_b(cardiac_4d_a, cardiac_b):
    """The shift fine-tuning must close: a nearest-class-mean rule calibrated on A fails on B."""
    image_a, labels_a = cardiac_4d_a.image.array[..., 0], cardiac_4d_a.labels.array[..., 0]
    threshold = 0.5 * (np.median(image_a[labels_a == 1]) + np.median(image_a[labels_a == 2]))
    region_a, region_b = labels_a > 0, cardiac_b.labels.array > 0
    on_a = dice(image_a[region_a] > threshold, labels_a[region_a] == 1)
    on_b = dice(cardiac_b.image.array[region_b] > threshold, cardiac_b.labels.array[region_b] == 1)
    assert on_a > 0.9
    assert on_a - on_b > 0.1


def test_site_c_is_harsher_than_b_low_dose_sharp_thick_and_early_bolus(cardiac_4d_a):
    """Site C (the transfer benchmark's cardiac site): noisier, sharper and thicker-sliced
    than B, and an early bolus that leaves the right heart brighter than the LV."""
    b, c = site_profile("lv-ct", "B"), site_profile("lv-ct", "C")
    assert c.noise_sd > 1.5 * b.noise_sd and c.blur_fwhm_mm < b.blur_fwhm_mm
    assert c.spacing_mm[2] > b.spacing_mm[2] and c.slice_profile_mm > b.slice_profile_mm
    assert c.tissue["rv_blood"] > c.tissue["blood"] + 150
    case = cardiac_phantom(21, "C", phases=1)
    assert case.image.spacing == pytest.approx(c.spacing_mm)
    image, labels = case.image.array, case.labels.array
    blood, muscle = np.median(image[labels == 1]), np.median(image[labels == 2])
    a_image, a_labels = cardiac_4d_a.image.array[..., 0], cardiac_4d_a.labels.array[..., 0]
    assert blood - muscle < 0.5 * (
        np.median(a_image[a_labels == 1]) - np.median(a_image[a_labels == 2])
    )
    assert (image > blood + 150).sum() > 0.2 * (labels == 1).sum()  # brighter than the LV


def test_brain_lesions_lie_in_white_matter_and_are_bright():
    case = brain_phantom(0, "A", n_lesions=12, spacing=(2.0, 2.0, 2.0))
    labels, image = case.labels.array, case.image.array
    assert set(np.unique(labels)) == {0, 1}
    assert case.truth["lesion_count"] >= 5
    ring = ndimage.binary_dilation(labels == 1, iterations=2) & (labels == 0)
    assert np.median(image[labels == 1]) > 1.3 * np.median(image[ring])


def test_brain_without_lesions_and_site_b_shift():
    none = brain_phantom(1, "B", n_lesions=0)
    assert none.labels.array.sum() == 0 and none.truth["lesion_count"] == 0
    assert none.image.spacing == pytest.approx((0.9, 0.9, 5.0))
    a = brain_phantom(2, "A", n_lesions=15)
    b = brain_phantom(2, "B", n_lesions=15)
    threshold = 0.5 * (
        np.median(a.image.array[a.labels.array == 1])
        + np.percentile(a.image.array[a.labels.array == 0], 99.5)
    )
    on_a = dice(a.image.array > threshold, a.labels.array == 1)
    on_b = dice(b.image.array > threshold, b.labels.array == 1)
    assert on_a - on_b > 0.1


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 0.5, 0.7), (1.0, 1.0, 2.0)])
def test_shell_volumes_match_the_analytic_volume(spacing):
    sphere = spherical_shell(20.0, 30.0, spacing, rng=np.random.default_rng(1))
    voxel = np.prod(spacing)
    exact = 4 / 3 * np.pi * (30.0**3 - 20.0**3)
    assert (sphere.labels.array == 2).sum() * voxel == pytest.approx(exact, rel=0.02)
    assert sphere.thickness_mm == 10.0 and sphere.valid.sum() == (sphere.labels.array == 2).sum()
    cylinder = cylindrical_shell(10.0, 16.0, spacing, axis=(1, 1, 0), rng=np.random.default_rng(2))
    assert cylinder.thickness_mm == 6.0
    assert 0 < cylinder.valid.sum() < (cylinder.labels.array == 2).sum()


@pytest.mark.parametrize("normal", [(1, 0, 0), (1, 1, 0), (1, 1, 1)])
def test_slab_wall_has_the_exact_thickness_along_its_normal(normal):
    phantom = slab(7.0, normal, (0.5, 0.5, 0.7), rng=np.random.default_rng(3))
    labels = phantom.labels.array
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    # Along the normal through a valid voxel, the run of wall voxels spans 7 mm (+- a voxel).
    step = min(0.5, 0.7) / 4
    idx = np.argwhere(phantom.valid)[len(np.argwhere(phantom.valid)) // 2]
    start = idx * np.array([0.5, 0.5, 0.7])
    ts = np.arange(-12, 12, step)
    pts = np.round((start + ts[:, None] * n) / np.array([0.5, 0.5, 0.7])).astype(int)
    inside = labels[tuple(pts.T)] == 2
    assert inside.sum() * step == pytest.approx(7.0, abs=0.8)


def test_phantom_dicom_series_are_valid_ct_and_mr(tmp_path):
    cardiac = cardiac_phantom(1, "B", phases=2, spacing=SMALL_SPACING)
    paths = write_dicom_series(cardiac.image, tmp_path / "ct")
    assert dciodvfy_errors(paths[0]) == []
    brain = brain_phantom(1, "A", spacing=(4.0, 4.0, 4.0))
    paths = write_dicom_series(brain.image, tmp_path / "mr")
    assert dciodvfy_errors(paths[len(paths) // 2]) == []
