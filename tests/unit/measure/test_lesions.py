"""Lesion statistics: components, minimum size, exact volumes, world centroids, order."""

from __future__ import annotations

import numpy as np
import pytest

from sitetune.errors import InvalidInput
from sitetune.measure.lesions import lesion_statistics


def _mask(shape=(10, 10, 10)) -> np.ndarray:
    return np.zeros(shape, dtype=np.uint8)


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        ((1, 0, 0), {6: 1, 18: 1, 26: 1}),  # sharing a face
        ((1, 1, 0), {6: 2, 18: 1, 26: 1}),  # sharing an edge
        ((1, 1, 1), {6: 2, 18: 2, 26: 1}),  # sharing a corner
    ],
)
def test_touching_lesions_split_or_join_by_connectivity(offset, expected):
    mask = _mask()
    mask[2:5, 2:5, 2:5] = 1
    corner = np.array([4, 4, 4]) + np.array(offset)
    mask[tuple(corner)] = 1  # one voxel beside the cube's far corner
    for connectivity, count in expected.items():
        report = lesion_statistics(mask, np.eye(4), connectivity=connectivity, min_lesion_ml=0)
        assert report.count == count, connectivity
        assert report.total_ml == pytest.approx(28 * 0.001, abs=1e-12)


def test_anisotropic_oblique_grid_volume_is_exact():
    rotation, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    spacing = np.array([0.43, 0.61, 2.7])
    affine = np.eye(4)
    affine[:3, :3] = rotation * spacing
    affine[:3, 3] = [-12.5, 40.0, 7.25]
    mask = _mask((12, 12, 6))
    mask[1:6, 2:7, 1:3] = 1  # 50 voxels
    mask[9:11, 9:11, 4] = 1  # 4 voxels, apart
    voxel_ml = 0.43 * 0.61 * 2.7 / 1000
    report = lesion_statistics(mask, affine, min_lesion_ml=0)
    assert [lesion.voxels for lesion in report.lesions] == [50, 4]
    assert abs(report.lesions[0].volume_ml - 50 * voxel_ml) < 1e-9
    assert abs(report.lesions[1].volume_ml - 4 * voxel_ml) < 1e-9
    assert abs(report.total_ml - 54 * voxel_ml) < 1e-9
    centre_index = np.array([3.0, 4.0, 1.5])  # mean voxel index of the first lesion
    np.testing.assert_allclose(
        report.lesions[0].centroid_mm, affine[:3, :3] @ centre_index + affine[:3, 3], atol=1e-9
    )


def test_lesions_at_the_volume_border_are_counted_with_their_box():
    mask = _mask((6, 7, 8))
    mask[0:2, 0, 0:3] = 1  # touches three faces
    mask[5, 6, 7] = 1  # the last voxel
    report = lesion_statistics(mask, np.diag([2.0, 1.0, 1.0, 1.0]), min_lesion_ml=0)
    assert report.count == 2
    first, last = report.lesions
    assert first.bbox_vox == ((0, 0, 0), (1, 0, 2)) and first.voxels == 6
    assert first.centroid_mm == pytest.approx((1.0, 0.0, 1.0))  # x index 0.5 at 2 mm
    assert last.bbox_vox == ((5, 6, 7), (5, 6, 7))
    assert last.centroid_mm == pytest.approx((10.0, 6.0, 7.0))


def test_minimum_size_drops_small_components_and_counts_them_apart():
    mask = _mask((30, 30, 30))
    mask[0:15, 0, 0] = 1  # 15 mm^3 = 0.015 mL exactly: kept
    mask[0:14, 5, 5] = 1  # 14 mm^3: dropped
    mask[20, 20, 20] = 1  # 1 mm^3: dropped
    mask[10:13, 10:13, 10:13] = 1  # 27 mm^3: kept
    report = lesion_statistics(mask, np.eye(4))  # default minimum 0.015 mL
    assert report.count == 2
    assert [lesion.voxels for lesion in report.lesions] == [27, 15]
    assert report.total_ml == pytest.approx(0.042, abs=1e-12)
    assert (report.dropped_count, report.dropped_ml) == (2, pytest.approx(0.015, abs=1e-12))
    # the instance map holds the counted lesions only, numbered by rank
    assert sorted(np.unique(report.instances).tolist()) == [0, 1, 2]
    assert (report.instances == 1).sum() == 27 and report.instances[20, 20, 20] == 0
    body = report.to_json()
    assert body["below_min"] == {"count": 2, "volume_ml": 0.015}
    assert body["min_lesion_ml"] == 0.015 and body["connectivity"] == 26


def test_order_is_largest_first_then_raster_order():
    mask = _mask()
    mask[7, 7, 7] = mask[7, 7, 8] = 1  # 2 voxels, later in raster order
    mask[1, 1, 1] = mask[1, 1, 2] = 1  # 2 voxels, earlier
    mask[4:7, 1, 1] = 1  # 3 voxels
    report = lesion_statistics(mask, np.eye(4), min_lesion_ml=0)
    assert [(lesion.id, lesion.voxels, lesion.bbox_vox[0]) for lesion in report.lesions] == [
        (1, 3, (4, 1, 1)),
        (2, 2, (1, 1, 1)),
        (3, 2, (7, 7, 7)),
    ]


def test_empty_mask_is_zero_lesions_not_an_error():
    report = lesion_statistics(_mask(), np.eye(4))
    assert (report.count, report.total_ml, report.lesions) == (0, 0.0, [])
    assert report.instances.shape == (10, 10, 10) and not report.instances.any()


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"connectivity": 8}, "invalid_connectivity"),
        ({"min_lesion_ml": -0.1}, "invalid_min_lesion_ml"),
        ({"min_lesion_ml": float("nan")}, "invalid_min_lesion_ml"),
    ],
)
def test_bad_options_are_rejected_with_the_value(kwargs, code):
    with pytest.raises(InvalidInput) as raised:
        lesion_statistics(_mask(), np.eye(4), **kwargs)
    assert raised.value.code == code
    assert str(next(iter(kwargs.values()))) in raised.value.message


def test_4d_mask_is_rejected():
    with pytest.raises(InvalidInput) as raised:
        lesion_statistics(np.zeros((4, 4, 4, 2)), np.eye(4))
    assert raised.value.code == "not_3d"
