"""WMH challenge metrics: hand-computed cases, every empty combination, and agreement with
a SimpleITK transcription of the challenge's evaluation script on random masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial import cKDTree

from sitetune.measure.metrics import (
    boundary,
    dice,
    hausdorff95,
    lesion_detection,
    mean_metrics,
    wmh_metrics,
)

SPACING = np.diag([0.9, 0.9, 3.0, 1.0])


def _empty(shape=(8, 8, 6)) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


def test_hand_computed_values():
    reference, prediction = _empty(), _empty()
    reference[1:3, 1:3, 1] = True  # 4 voxels
    reference[6, 6, 4] = True  # a second lesion, 1 voxel
    prediction[1:3, 1:3, 1] = True
    prediction[2, 3, 1] = True  # touches the first reference lesion
    prediction[5, 0, 5] = True  # a false lesion
    m = wmh_metrics(prediction, reference, SPACING)
    assert m["dice"] == pytest.approx(2 * 4 / (6 + 5))
    assert m["avd_pct"] == pytest.approx(abs(6 - 5) / 5 * 100)
    assert m["lesion_recall"] == pytest.approx(1 / 2)  # the single voxel is missed
    assert m["lesion_precision"] == pytest.approx(1 / 2)  # one of two predicted touches
    assert m["lesion_f1"] == pytest.approx(0.5)
    assert m["volume_difference_ml"] == pytest.approx(1 * 0.9 * 0.9 * 3.0 / 1000, abs=1e-12)
    assert m["lesion_count_difference"] == 0


def test_hd95_of_a_shifted_square_is_the_shift_in_mm():
    reference = _empty((9, 9, 9))
    reference[2:5, 2:5, 2] = True
    prediction = np.roll(reference, 2, axis=2)  # two slices further, 3 mm each
    assert hausdorff95(prediction, reference, SPACING) == pytest.approx(6.0)
    assert hausdorff95(reference, reference, SPACING) == 0.0


def test_hd95_single_voxels_and_the_larger_directed_percentile():
    reference, prediction = _empty((20, 3, 3)), _empty((20, 3, 3))
    reference[0, 1, 1] = True
    prediction[0, 1, 1] = prediction[10, 1, 1] = True
    # prediction -> reference: [0, 9 mm]; its 95th percentile (linear) is 8.55 mm;
    # reference -> prediction: [0]. The larger one counts.
    assert hausdorff95(prediction, reference, SPACING) == pytest.approx(0.95 * 9.0)


def test_boundary_erodes_in_plane_only_and_not_at_the_array_edge():
    cube = _empty((5, 5, 5))
    cube[1:4, 1:4, 1:4] = True
    # each of the three slices keeps its ring of 8; the slice centres are interior
    assert boundary(cube).sum() == 24
    # a 3x3 square minus a corner: the centre has an 8-neighbour missing -> boundary
    square = _empty((5, 5, 3))
    square[1:4, 1:4, 1] = True
    square[1, 1, 1] = False
    assert boundary(square).sum() == 8
    full = np.ones((4, 4, 2), dtype=bool)
    assert not boundary(full).any()  # ITK's BinaryErode treats outside as foreground


@pytest.mark.parametrize(
    ("has_reference", "has_prediction", "expected"),
    [
        (
            False,
            False,
            {
                "dice": 1.0,
                "hd95_mm": 0.0,
                "avd_pct": 0.0,
                "recall": 1.0,
                "precision": 1.0,
                "f1": 1.0,
            },
        ),
        (
            True,
            False,
            {
                "dice": 0.0,
                "hd95_mm": None,
                "avd_pct": 100.0,
                "recall": 0.0,
                "precision": 1.0,
                "f1": 0.0,
            },
        ),
        (
            False,
            True,
            {
                "dice": 0.0,
                "hd95_mm": None,
                "avd_pct": None,
                "recall": 1.0,
                "precision": 0.0,
                "f1": 0.0,
            },
        ),
    ],
)
def test_empty_mask_combinations(has_reference, has_prediction, expected):
    reference, prediction = _empty(), _empty()
    reference[2:4, 2:4, 2] = has_reference
    prediction[5:7, 5:7, 3] = has_prediction
    m = wmh_metrics(prediction, reference, SPACING)
    got = {
        "dice": m["dice"],
        "hd95_mm": None if math.isnan(m["hd95_mm"]) else m["hd95_mm"],
        "avd_pct": None if math.isnan(m["avd_pct"]) else m["avd_pct"],
        "recall": m["lesion_recall"],
        "precision": m["lesion_precision"],
        "f1": m["lesion_f1"],
    }
    assert got == expected
    assert m["volume_difference_ml"] == pytest.approx(
        4 * 0.9 * 0.9 * 3.0 / 1000 * (has_reference + has_prediction), abs=1e-12
    )
    assert m["lesion_count_difference"] == int(has_prediction) - int(has_reference)


def test_mean_metrics_skips_undefined_values_and_says_how_many_counted():
    summary = mean_metrics([{"hd95_mm": 2.0}, {"hd95_mm": math.nan}, {"hd95_mm": 4.0}])
    assert summary == {"hd95_mm": {"mean": 3.0, "median": 3.0, "defined": 2}}


# --- the challenge's evaluation, transcribed with SimpleITK (its own toolkit) -------------


def _sitk(mask: np.ndarray, affine: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(np.transpose(mask.astype(np.uint8), (2, 1, 0)))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((affine[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(affine[:3, 3].tolist())
    return image


def _challenge(test: sitk.Image, result: sitk.Image) -> dict:
    test_array = sitk.GetArrayFromImage(test).ravel().astype(bool)
    result_array = sitk.GetArrayFromImage(result).ravel().astype(bool)
    dsc = 2 * (test_array & result_array).sum() / (test_array.sum() + result_array.sum())

    h_test = sitk.Subtract(test, sitk.BinaryErode(test, (1, 1, 0)))
    h_result = sitk.Subtract(result, sitk.BinaryErode(result, (1, 1, 0)))

    def coordinates(image):
        index = np.transpose(np.flipud(np.nonzero(sitk.GetArrayFromImage(image))))
        return [test.TransformIndexToPhysicalPoint([int(v) for v in x]) for x in index]

    a, b = coordinates(h_test), coordinates(h_result)
    d_test_to_result = cKDTree(a).query(b, k=1)[0]
    d_result_to_test = cKDTree(b).query(a, k=1)[0]
    hd95 = max(np.percentile(d_test_to_result, 95), np.percentile(d_result_to_test, 95))

    cc = sitk.ConnectedComponentImageFilter()
    cc.SetFullyConnected(True)
    cc_test = cc.Execute(test)
    hit = sitk.Multiply(cc_test, sitk.Cast(result, sitk.sitkUInt32))
    recall = (len(np.unique(sitk.GetArrayFromImage(hit))) - 1) / (
        len(np.unique(sitk.GetArrayFromImage(cc_test))) - 1
    )
    cc_result = cc.Execute(result)
    hit = sitk.Multiply(cc_result, sitk.Cast(test, sitk.sitkUInt32))
    precision = (len(np.unique(sitk.GetArrayFromImage(hit))) - 1) / (
        len(np.unique(sitk.GetArrayFromImage(cc_result))) - 1
    )
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    test_sum, result_sum = test_array.sum(), result_array.sum()
    avd = abs(test_sum - result_sum) / test_sum * 100
    return {"dice": dsc, "hd95_mm": hd95, "avd_pct": avd, "lesion_recall": recall, "lesion_f1": f1}


def _blobs(rng: np.random.Generator, shape) -> np.ndarray:
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    return noise > np.percentile(noise, 93)


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_the_challenge_evaluation(seed):
    rng = np.random.default_rng(seed)
    shape = (28, 24, 12)
    reference = _blobs(rng, shape)
    prediction = _blobs(rng, shape) | (reference & (rng.uniform(size=shape) < 0.7))
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotation *= np.sign(np.linalg.det(rotation))
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.array([0.9, 1.1, 3.0])
    affine[:3, 3] = rng.uniform(-50, 50, 3)
    ours = wmh_metrics(prediction, reference, affine)
    theirs = _challenge(_sitk(reference, affine), _sitk(prediction, affine))
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    assert 0.1 < ours["dice"] < 0.9 and ours["hd95_mm"] > 0  # a non-trivial case
    assert lesion_detection(prediction, reference)["recall"] == ours["lesion_recall"]
    assert dice(prediction, reference) == ours["dice"]
