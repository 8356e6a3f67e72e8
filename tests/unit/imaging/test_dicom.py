"""DICOM series -> Volume: geometry, ordering, phases, multi-frame, selection, bad input."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from sitetune.errors import InvalidInput, UnsafeArchive, UnsupportedInput
from sitetune.imaging.dicom import load_dicom
from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.load import load_volume
from sitetune.imaging.nifti import save_nifti
from sitetune.imaging.volume import WorldFrame


def _zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*.dcm")):
            z.write(p, p.relative_to(folder).as_posix())
    return target


def test_oblique_anisotropic_dicom_and_nifti_agree_voxel_for_voxel(oblique_cardiac, tmp_path):
    ed = oblique_cardiac.image.phase(0)
    write_dicom_series(ed, tmp_path / "dcm")
    save_nifti(ed.array.astype(np.int16), tmp_path / "ed.nii.gz", affine=ed.affine)

    from_dicom = load_volume(tmp_path / "dcm")
    from_nifti = load_volume(tmp_path / "ed.nii.gz")

    np.testing.assert_array_equal(from_dicom.array, ed.array)
    np.testing.assert_array_equal(from_nifti.array, ed.array)
    world_dicom = from_dicom.world_coordinates()
    world_nifti = from_nifti.world_coordinates()
    assert np.abs(world_dicom - world_nifti).max() <= 1e-4
    assert np.abs(world_dicom - ed.world_coordinates()).max() <= 1e-4
    assert np.allclose(from_dicom.spacing, (2.5, 2.5, 3.5), atol=1e-6)
    assert from_dicom.native_frame is WorldFrame.LPS and from_dicom.modality == "CT"
    # The native (LPS) frame flips x and y of RAS, nothing else.
    lps = from_dicom.world_coordinates(WorldFrame.LPS)
    np.testing.assert_allclose(lps[..., :2], -world_dicom[..., :2])


def test_slices_are_ordered_by_position_not_instance_number(small_cardiac_3d, tmp_path):
    paths = write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    numbers = list(range(1, len(paths) + 1))
    random.Random(1).shuffle(numbers)
    for path, number in zip(paths, numbers, strict=True):
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = number
        ds.save_as(path)
    volume = load_dicom(tmp_path / "dcm")
    np.testing.assert_array_equal(volume.array, small_cardiac_3d.image.array)
    np.testing.assert_allclose(volume.affine, small_cardiac_3d.image.affine, atol=1e-5)


def test_zip_folder_and_datasets_give_the_same_volume(small_cardiac_3d, tmp_path):
    write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    archive = _zip_folder(tmp_path / "dcm", tmp_path / "series.zip")
    from_zip = load_volume(archive)
    datasets = [pydicom.dcmread(p) for p in sorted((tmp_path / "dcm").glob("*.dcm"))]
    from_list = load_dicom(datasets)
    np.testing.assert_array_equal(from_zip.array, small_cardiac_3d.image.array)
    np.testing.assert_array_equal(from_list.array, from_zip.array)
    # Source references survive for DICOM SEG: one header per slice, pixel data dropped.
    assert len(from_zip.dicom.datasets) == small_cardiac_3d.image.shape[2]
    assert all("PixelData" not in ds for ds in from_zip.dicom.datasets)


def test_upload_saved_without_a_zip_suffix_is_still_read_as_zip(small_cardiac_3d, tmp_path):
    write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    archive = _zip_folder(tmp_path / "dcm", tmp_path / "upload.bin")
    assert load_volume(archive).shape == small_cardiac_3d.image.shape


def test_rescale_slope_and_intercept_are_applied(small_cardiac_3d, tmp_path):
    paths = write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    for path in paths:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array.astype(np.int32)
        ds.PixelRepresentation = 0
        ds.PixelData = ((stored + 1024) // 2).astype(np.uint16).tobytes()  # exact: values even?
        ds.RescaleSlope, ds.RescaleIntercept = "2", "-1024"
        ds.save_as(path)
    volume = load_dicom(tmp_path / "dcm")
    expected = ((small_cardiac_3d.image.array.astype(np.int32) + 1024) // 2) * 2 - 1024
    np.testing.assert_array_equal(volume.array, expected.astype(np.float32))


@pytest.mark.parametrize("layout", ["series", "temporal"])
def test_cardiac_phases_load_as_4d_in_cycle_order(oblique_cardiac, tmp_path, layout):
    paths = write_dicom_series(oblique_cardiac.image, tmp_path / "dcm", phase_layout=layout)
    # Scramble file names so that reading order says nothing about the phase order.
    for i, path in enumerate(random.Random(2).sample(paths, len(paths))):
        path.rename(path.with_name(f"x{i:05d}.dcm"))
    volume = load_volume(tmp_path / "dcm")
    assert volume.array.shape == oblique_cardiac.image.array.shape
    np.testing.assert_array_equal(volume.array, oblique_cardiac.image.array)
    assert [p.nominal_percentage for p in volume.phases] == [0.0, 25.0, 50.0, 75.0]
    assert volume.phase(2).array.shape == volume.shape
    assert len({p.series_uid for p in volume.phases}) == (4 if layout == "series" else 1)


def test_phases_ordered_by_trigger_time_when_percentage_is_absent(oblique_cardiac, tmp_path):
    paths = write_dicom_series(oblique_cardiac.image, tmp_path / "dcm")
    for path in paths:
        ds = pydicom.dcmread(path)
        del ds.NominalPercentageOfCardiacPhase
        ds.save_as(path)
    volume = load_volume(tmp_path / "dcm")
    np.testing.assert_array_equal(volume.array, oblique_cardiac.image.array)
    assert [p.trigger_time_ms for p in volume.phases] == [0.0, 200.0, 400.0, 600.0]


def test_enhanced_multiframe_loads_like_its_single_frame_series(small_cardiac_3d, tmp_path):
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    paths = write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    legacy = [pydicom.dcmread(p) for p in paths]
    random.Random(3).shuffle(legacy)  # frame order is not slice order
    enhanced = LegacyConvertedEnhancedCTImage(
        legacy_datasets=legacy,
        series_instance_uid=pydicom.uid.generate_uid(),
        series_number=5,
        sop_instance_uid=pydicom.uid.generate_uid(),
        instance_number=1,
    )
    enhanced.save_as(tmp_path / "enhanced.dcm")
    volume = load_volume(tmp_path / "enhanced.dcm")
    np.testing.assert_array_equal(volume.array, small_cardiac_3d.image.array)
    np.testing.assert_allclose(volume.affine, small_cardiac_3d.image.affine, atol=1e-5)
    assert {s.frame_number for s in volume.dicom.slices[0]} == set(range(1, len(paths) + 1))


def test_several_unrelated_series_need_a_selector(small_cardiac_3d, oblique_cardiac, tmp_path):
    write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm" / "a", series_description="axial")
    write_dicom_series(
        oblique_cardiac.image.phase(0), tmp_path / "dcm" / "b", series_description="oblique"
    )
    with pytest.raises(InvalidInput) as err:
        load_volume(tmp_path / "dcm")
    assert err.value.code == "ambiguous_series" and err.value.status == 422
    found = err.value.details
    assert sorted(s["description"] for s in found) == ["axial", "oblique"]
    chosen = next(s for s in found if s["description"] == "axial")
    volume = load_volume(tmp_path / "dcm", series=chosen["series_uid"])
    np.testing.assert_array_equal(volume.array, small_cardiac_3d.image.array)
    with pytest.raises(InvalidInput) as err:
        load_volume(tmp_path / "dcm", series="1.2.3.4")
    assert err.value.code == "series_not_found" and len(err.value.details) == 2


def test_missing_slice_is_reported_with_its_position(small_cardiac_3d, tmp_path):
    paths = write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    paths[5].unlink()
    with pytest.raises(InvalidInput, match=r"1 slice\(s\) missing") as err:
        load_volume(tmp_path / "dcm")
    assert err.value.code == "missing_slices"


def test_irregular_spacing_is_refused(small_cardiac_3d, tmp_path):
    paths = write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    ds = pydicom.dcmread(paths[4])
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 0.8
    ds.save_as(paths[4])
    with pytest.raises(InvalidInput, match="irregular slice spacing") as err:
        load_volume(tmp_path / "dcm")
    assert err.value.code == "irregular_spacing"


def test_duplicate_positions_without_phase_tags_are_refused(small_cardiac_3d, tmp_path):
    paths = write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    ds = pydicom.dcmread(paths[3])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "dcm" / "copy.dcm")
    with pytest.raises(InvalidInput, match="share the slice position") as err:
        load_volume(tmp_path / "dcm")
    assert err.value.code == "duplicate_slices"


def test_mixed_orientation_within_a_series_is_refused(small_cardiac_3d, tmp_path):
    paths = write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    ds = pydicom.dcmread(paths[2])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # a sagittal localizer in the series
    ds.save_as(paths[2])
    with pytest.raises(InvalidInput, match="orientation differs") as err:
        load_volume(tmp_path / "dcm")
    assert err.value.code == "inconsistent_series"


def test_truncated_dicom_file_is_an_error_not_a_dropped_slice(small_cardiac_3d, tmp_path):
    paths = write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    data = paths[7].read_bytes()
    paths[7].write_bytes(data[: len(data) - 500])
    with pytest.raises(InvalidInput) as err:
        load_volume(tmp_path / "dcm")
    assert err.value.code in {"invalid_dicom", "invalid_pixel_data"}
    assert paths[7].name in err.value.message


def test_header_only_truncation_is_an_error(small_cardiac_3d, tmp_path):
    paths = write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    paths[1].write_bytes(paths[1].read_bytes()[:300])
    with pytest.raises(InvalidInput) as err:
        load_volume(tmp_path / "dcm")
    assert paths[1].name in err.value.message


def test_non_image_objects_alone_are_refused_with_their_classes(tmp_path):
    from pydicom.data import get_testdata_file

    folder = tmp_path / "dcm"
    folder.mkdir()
    for name in ("liver.dcm", "rtplan.dcm"):  # a Segmentation and an RT Plan
        (folder / name).write_bytes(Path(get_testdata_file(name)).read_bytes())
    with pytest.raises(InvalidInput, match="no DICOM image instances") as err:
        load_volume(folder)
    assert "Segmentation Storage" in err.value.message and "RT Plan" in err.value.message


def test_non_image_objects_beside_a_series_are_ignored(small_cardiac_3d, tmp_path):
    from pydicom.data import get_testdata_file

    write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    (tmp_path / "dcm" / "plan.dcm").write_bytes(Path(get_testdata_file("rtplan.dcm")).read_bytes())
    (tmp_path / "dcm" / "README.txt").write_text("exported by a viewer")
    assert load_volume(tmp_path / "dcm").shape == small_cardiac_3d.image.shape


def test_image_without_geometry_is_refused():
    from pydicom.data import get_testdata_file

    with pytest.raises(InvalidInput, match="ImagePositionPatient"):
        load_volume(get_testdata_file("JPEG-LL.dcm"))  # a secondary capture


def test_random_bytes_are_unsupported(tmp_path):
    path = tmp_path / "upload.bin"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(UnsupportedInput) as err:
        load_volume(path)
    assert err.value.status == 415


def test_zip_of_random_bytes_reports_no_images(tmp_path):
    archive = tmp_path / "junk.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.dcm", np.random.default_rng(1).bytes(2048))
    with pytest.raises(InvalidInput, match="no DICOM image instances"):
        load_volume(archive)


def test_zip_with_parent_path_is_refused_before_reading(small_cardiac_3d, tmp_path):
    paths = write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(paths[0], "series/0.dcm")
        z.write(paths[1], "../../escape.dcm")
    with pytest.raises(UnsafeArchive, match="outside the archive"):
        load_volume(archive)
    assert not (tmp_path.parent / "escape.dcm").exists()


def test_mask_saved_as_nifti_for_dicom_input_lies_on_the_dicom_grid(oblique_cardiac, tmp_path):
    ed = oblique_cardiac.image.phase(0)
    write_dicom_series(ed, tmp_path / "dcm")
    source = load_volume(tmp_path / "dcm")
    mask = oblique_cardiac.labels.phase(0).array
    save_nifti(source.with_array(mask), tmp_path / "mask.nii.gz")
    back = load_volume(tmp_path / "mask.nii.gz")
    np.testing.assert_array_equal(back.array, mask)
    assert np.abs(back.world_coordinates() - source.world_coordinates()).max() <= 1e-4


def test_vendor_enhanced_ct_loads():
    from pydicom.data import get_testdata_file

    volume = load_volume(get_testdata_file("eCT_Supplemental.dcm"))  # Enhanced CT, 2 frames
    assert volume.shape == (512, 512, 2) and volume.modality == "CT"
    assert volume.spacing == pytest.approx((0.388672, 0.388672, 10.0), abs=1e-5)
    assert volume.array.min() == -1024.0  # rescale from the functional groups applied
