"""DICOM SEG from a label map: valid (dciodvfy), coded, and on the source grid."""

from __future__ import annotations

import random

import highdicom as hd
import numpy as np
import pydicom
import pytest

from sitetune.imaging.codes import LESION, LV_BLOOD_POOL, LV_MYOCARDIUM
from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.load import load_volume
from sitetune.imaging.nifti import save_nifti
from sitetune.imaging.seg import segmentation_from_labels, write_seg
from tests.conftest import dciodvfy_errors

LV_STRUCTURES = {1: LV_BLOOD_POOL, 2: LV_MYOCARDIUM}


def _labels_from_seg(seg_path, source) -> np.ndarray:
    """Rebuild an (X, Y, Z) label map by looking up each source slice's frames in the SEG."""
    seg = hd.seg.segread(seg_path)
    out = np.zeros(source.shape, dtype=np.uint8)
    for k, ref in enumerate(source.dicom.slices[0]):
        uid = source.dicom.datasets[ref.dataset_index].SOPInstanceUID
        if ref.frame_number is None:
            frames = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=[uid], combine_segments=True
            )
        else:
            frames = seg.get_pixels_by_source_frame(
                source_sop_instance_uid=uid,
                source_frame_numbers=[ref.frame_number],
                combine_segments=True,
            )
        out[:, :, k] = frames[0].T
    return out


def test_seg_on_an_oblique_series_validates_and_lies_on_the_source_grid(oblique_cardiac, tmp_path):
    ed = oblique_cardiac.image.phase(0)
    paths = write_dicom_series(ed, tmp_path / "dcm")
    random.Random(0).shuffle(paths)
    source = load_volume(tmp_path / "dcm")
    labels = oblique_cardiac.labels.phase(0).array
    seg = segmentation_from_labels(
        labels, source, LV_STRUCTURES, algorithm_name="lv-ct", algorithm_version="3"
    )
    path = write_seg(seg, tmp_path / "seg.dcm")

    assert dciodvfy_errors(path) == []
    back = pydicom.dcmread(path)
    assert back.FrameOfReferenceUID == source.dicom.frame_of_reference_uid
    assert back.StudyInstanceUID == source.dicom.study_uid
    segments = {s.SegmentLabel: s for s in back.SegmentSequence}
    assert set(segments) == {"LV blood pool", "LV myocardium"}
    myo = segments["LV myocardium"]
    assert myo.SegmentedPropertyTypeCodeSequence[0].CodeValue == LV_MYOCARDIUM.type.value
    assert myo.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    algorithm = myo.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("lv-ct", "3")
    np.testing.assert_array_equal(_labels_from_seg(path, source), labels)


def test_seg_on_a_multiframe_source_references_frames(small_cardiac_3d, tmp_path):
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    paths = write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    legacy = [pydicom.dcmread(p) for p in paths]
    random.Random(5).shuffle(legacy)
    LegacyConvertedEnhancedCTImage(
        legacy_datasets=legacy,
        series_instance_uid=pydicom.uid.generate_uid(),
        series_number=5,
        sop_instance_uid=pydicom.uid.generate_uid(),
        instance_number=1,
    ).save_as(tmp_path / "enhanced.dcm")
    source = load_volume(tmp_path / "enhanced.dcm")
    labels = small_cardiac_3d.labels.array
    seg = segmentation_from_labels(
        labels, source, LV_STRUCTURES, algorithm_name="lv-ct", algorithm_version="1"
    )
    path = write_seg(seg, tmp_path / "seg.dcm")
    assert dciodvfy_errors(path) == []
    np.testing.assert_array_equal(_labels_from_seg(path, source), labels)


def test_empty_lesion_mask_still_lists_the_segment(tmp_path):
    from sitetune.imaging.phantoms.brain import brain_phantom

    case = brain_phantom(3, "B", n_lesions=0, spacing=(3.0, 3.0, 6.0))
    write_dicom_series(case.image, tmp_path / "dcm")
    source = load_volume(tmp_path / "dcm")
    assert source.modality == "MR"
    seg = segmentation_from_labels(
        np.zeros(source.shape, np.uint8),
        source,
        {1: LESION},
        algorithm_name="flair-lesion",
        algorithm_version="1",
    )
    path = write_seg(seg, tmp_path / "seg.dcm")
    assert dciodvfy_errors(path) == []
    assert [s.SegmentLabel for s in pydicom.dcmread(path).SegmentSequence] == ["lesion"]


def test_seg_refuses_labels_off_the_source_grid_or_uncoded(small_cardiac_3d, tmp_path):
    write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    source = load_volume(tmp_path / "dcm")
    with pytest.raises(ValueError, match="shape"):
        segmentation_from_labels(
            np.zeros((3, 3, 3), np.uint8),
            source,
            LV_STRUCTURES,
            algorithm_name="lv-ct",
            algorithm_version="1",
        )
    labels = small_cardiac_3d.labels.array.copy()
    labels[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"label values \[7\]"):
        segmentation_from_labels(
            labels, source, LV_STRUCTURES, algorithm_name="lv-ct", algorithm_version="1"
        )
    save_nifti(labels, tmp_path / "mask.nii.gz", affine=source.affine)
    nifti_source = load_volume(tmp_path / "mask.nii.gz")
    with pytest.raises(ValueError, match="not read from DICOM"):
        segmentation_from_labels(
            labels, nifti_source, LV_STRUCTURES, algorithm_name="lv-ct", algorithm_version="1"
        )
