"""NIfTI geometry rules: sform over qform, 4D, label dtypes, corrupt files."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from sitetune.errors import InvalidInput, UnsupportedInput
from sitetune.imaging.load import load_volume
from sitetune.imaging.nifti import load_nifti, save_nifti

ROTATED = np.array(
    [[0.0, -1.2, 0.0, 30.0], [0.9, 0.0, 0.0, -20.0], [0.0, 0.0, 2.5, 5.0], [0.0, 0.0, 0.0, 1.0]]
)


def _write(path, array, qform=None, sform=None):
    img = nib.Nifti1Image(array, None)
    if qform is not None:
        img.set_qform(qform, code=1)
    else:
        img.set_qform(None, code=0)
    if sform is not None:
        img.set_sform(sform, code=2)
    else:
        img.set_sform(None, code=0)
    nib.save(img, path)
    return path


def test_sform_wins_over_qform(tmp_path):
    other = np.diag([1.0, 1.0, 1.0, 1.0])
    path = _write(
        tmp_path / "a.nii.gz", np.zeros((4, 5, 6), np.float32), qform=other, sform=ROTATED
    )
    np.testing.assert_allclose(load_nifti(path).affine, ROTATED, atol=1e-6)


def test_qform_alone_is_used(tmp_path):
    path = _write(tmp_path / "a.nii", np.zeros((4, 5, 6), np.float32), qform=ROTATED)
    np.testing.assert_allclose(load_nifti(path).affine, ROTATED, atol=1e-5)


def test_neither_form_falls_back_to_voxel_sizes(tmp_path):
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), None)
    img.header.set_zooms((0.5, 0.7, 3.0))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    nib.save(img, tmp_path / "a.nii")
    np.testing.assert_allclose(load_nifti(tmp_path / "a.nii").affine, np.diag([0.5, 0.7, 3.0, 1]))


def test_4d_and_trailing_singletons(tmp_path):
    four = np.arange(4 * 5 * 6 * 3, dtype=np.int16).reshape(4, 5, 6, 3)
    save_nifti(four, tmp_path / "four.nii.gz", affine=ROTATED)
    volume = load_volume(tmp_path / "four.nii.gz")
    assert volume.array.shape == (4, 5, 6, 3) and volume.n_phases == 3
    np.testing.assert_array_equal(volume.phase(2).array, four[..., 2])
    five = four[..., :1, None]  # (4, 5, 6, 1, 1)
    nib.save(nib.Nifti1Image(five, ROTATED), tmp_path / "five.nii.gz")
    assert load_nifti(tmp_path / "five.nii.gz").array.shape == (4, 5, 6, 1)


def test_label_maps_keep_their_integer_dtype_and_images_become_float(tmp_path):
    labels = np.random.default_rng(0).integers(0, 3, (6, 6, 6)).astype(np.uint8)
    save_nifti(labels, tmp_path / "mask.nii.gz", affine=ROTATED)
    loaded = load_nifti(tmp_path / "mask.nii.gz")
    assert loaded.array.dtype == np.uint8
    np.testing.assert_array_equal(loaded.array, labels)
    img = nib.Nifti1Image(labels.astype(np.int16), ROTATED)
    img.header.set_slope_inter(0.5, -10)
    nib.save(img, tmp_path / "scaled.nii.gz")
    scaled = load_nifti(tmp_path / "scaled.nii.gz")
    assert scaled.array.dtype == np.float32
    np.testing.assert_allclose(scaled.array, labels * 0.5 - 10)


def test_truncated_nifti_is_invalid(tmp_path):
    save_nifti(np.ones((20, 20, 20), np.float32), tmp_path / "a.nii.gz", affine=ROTATED)
    raw = gzip.decompress((tmp_path / "a.nii.gz").read_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        load_volume(tmp_path / "cut.nii.gz")


def test_gzip_of_something_else_is_unsupported(tmp_path):
    (tmp_path / "x.nii.gz").write_bytes(gzip.compress(b"hello, not an image" * 50))
    with pytest.raises(UnsupportedInput):
        load_volume(tmp_path / "x.nii.gz")


def test_two_dimensional_image_is_treated_as_one_slice(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((7, 8), np.float32), np.eye(4)), tmp_path / "a.nii")
    assert load_nifti(tmp_path / "a.nii").shape == (7, 8, 1)
