"""TID 1500 measurement report (Comprehensive 3D SR): valid per dciodvfy, values and
references where a reader looks for them."""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.sr.coding import Code

from sitetune.imaging.codes import LESION, LV_BLOOD_POOL, LV_MYOCARDIUM
from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.load import load_volume
from sitetune.imaging.seg import segmentation_from_labels
from sitetune.imaging.sr import MeasurementGroup, measurement_report
from tests.conftest import dciodvfy_errors

PROCEDURE = Code("241547009", "SCT", "CT of heart")


def _items(sr, value_type):
    found = []

    def walk(items):
        for item in items:
            if item.ValueType == value_type:
                found.append(item)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return found


def _numbers(sr) -> set[tuple[str, float]]:
    return {
        (n.ConceptNameCodeSequence[0].CodeValue, float(n.MeasuredValueSequence[0].NumericValue))
        for n in _items(sr, "NUM")
    }


def test_lv_report_references_each_phase_seg_and_holds_the_numbers(small_cardiac_3d, tmp_path):
    write_dicom_series(small_cardiac_3d.image, tmp_path / "ct")
    volume = load_volume(tmp_path / "ct")
    labels = small_cardiac_3d.labels.array.astype(np.uint8)
    seg = segmentation_from_labels(
        labels, volume, {1: LV_BLOOD_POOL, 2: LV_MYOCARDIUM},
        algorithm_name="lv-ct", algorithm_version="3",
    )  # fmt: skip
    thickness = {"median": 9.5, "p95": 12.25, "max": 14.0, "mean": 9.9}
    groups = [
        MeasurementGroup("LV myocardium, end-diastole", seg, 2, LV_MYOCARDIUM, volume_ml=101.5,
                         thickness_mm=thickness, phase="ED"),
        MeasurementGroup("LV blood pool, end-diastole", seg, 1, LV_BLOOD_POOL, volume_ml=80.25,
                         phase="ED"),
    ]  # fmt: skip
    sr = measurement_report(
        volume.dicom.phase_datasets(0), groups,
        algorithm_name="lv-ct", algorithm_version="3", procedure=PROCEDURE,
    )  # fmt: skip
    path = tmp_path / "sr.dcm"
    sr.save_as(path)
    assert dciodvfy_errors(path) == []
    sr = pydicom.dcmread(path)
    assert sr.StudyInstanceUID == volume.dicom.datasets[0].StudyInstanceUID
    assert _numbers(sr) == {("118565006", 101.5), ("118565006", 80.25), ("122445", 9.5),
                       ("122445", 12.25), ("122445", 14.0), ("122445", 9.9)}  # fmt: skip
    referenced = {
        (i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
         int(i.ReferencedSOPSequence[0].ReferencedSegmentNumber))
        for i in _items(sr, "IMAGE")
    }  # fmt: skip
    assert referenced == {(seg.SOPInstanceUID, 1), (seg.SOPInstanceUID, 2)}
    phases = {i.ConceptCodeSequence[0].CodeValue for i in _items(sr, "CODE")
              if i.ConceptNameCodeSequence[0].CodeValue == "246092007"}  # fmt: skip
    assert phases == {"109022"}  # end diastole


def test_an_empty_lesion_segment_is_reported_as_zero_without_a_region(small_cardiac_3d, tmp_path):
    write_dicom_series(small_cardiac_3d.image, tmp_path / "ct")
    volume = load_volume(tmp_path / "ct")
    empty = np.zeros(volume.shape, np.uint8)
    seg = segmentation_from_labels(
        empty, volume, {1: LESION}, algorithm_name="flair-lesion", algorithm_version="1"
    )
    group = MeasurementGroup("White matter lesions", seg, 1, LESION, volume_ml=0.0,
                             lesion_count=0, has_region=False)  # fmt: skip
    sr = measurement_report(
        volume.dicom.phase_datasets(0), [group],
        algorithm_name="flair-lesion", algorithm_version="1", procedure=PROCEDURE,
    )  # fmt: skip
    path = tmp_path / "sr.dcm"
    sr.save_as(path)
    assert dciodvfy_errors(path) == []
    assert _numbers(sr) == {("118565006", 0.0), ("246206008", 0.0)}
    assert _items(sr, "IMAGE") == []
