"""The DICOM outputs policy: SEG per measured phase and one SR; what cannot be built is
reported with the reason and never stops the rest."""

from __future__ import annotations

import datetime

import numpy as np
import pydicom
import pytest

from sitetune.analysis.outputs import build_dicom_outputs, seg_phases
from sitetune.analysis.tasks import Task
from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.load import load_volume
from sitetune.measure.ventricle import measure_ventricle
from sitetune.models.registry import ModelVersion
from sitetune.training.base import BASE_CARDS, Family
from tests.conftest import dciodvfy_errors
from tests.unit.imaging.test_sr import _items


@pytest.fixture
def version(tmp_path) -> ModelVersion:
    card = BASE_CARDS[Family.LV_CT]
    return ModelVersion("lv-ct", 7, card, None, datetime.datetime.now(datetime.UTC), "t", tmp_path)


def test_seg_phases_follow_the_task():
    measured = {"ed": {"index": 0}, "es": {"index": 3}}
    names = [p.name for p in seg_phases(Task.WALL_THICKNESS, 5, measured)]
    assert names == ["seg-ed.dcm", "seg-es.dcm"]
    assert [p.phase for p in seg_phases(Task.WALL_THICKNESS, 5, measured)] == [0, 3]
    assert [p.name for p in seg_phases(Task.WALL_THICKNESS, 1, {})] == ["seg-ed.dcm"]
    assert [p.name for p in seg_phases(Task.SEGMENT, 2, {})] == [
        "seg-phase-0.dcm",
        "seg-phase-1.dcm",
    ]
    assert [p.name for p in seg_phases(Task.LESION_VOLUME, 1, {})] == ["seg-lesions.dcm"]


def _lv_outputs(case, folder, version, strip=()):
    for path in write_dicom_series(case.image, folder):
        ds = pydicom.dcmread(path)
        for keyword in strip:
            delattr(ds, keyword)
        ds.save_as(path)
    source = load_volume(folder)
    labels = case.labels.array.astype(np.uint8)
    measurement = measure_ventricle(labels, source.affine, surfaces="smoothed").to_json()
    return build_dicom_outputs(source, labels, version, Task.WALL_THICKNESS, measurement)


def test_without_frame_of_reference_the_sr_carries_the_numbers_without_regions(
    small_cardiac_3d, tmp_path, version
):
    outputs = _lv_outputs(small_cardiac_3d, tmp_path / "dcm", version, ("FrameOfReferenceUID",))
    assert "Frame of Reference" in outputs.unavailable["seg"]
    assert list(outputs.files) == ["report-sr.dcm"]
    sr = outputs.files["report-sr.dcm"]
    assert not _items(sr, "IMAGE") and _items(sr, "NUM")  # no referenced segment, numbers kept
    sr.save_as(tmp_path / "sr.dcm")
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []


def test_type2_gaps_and_invalid_values_become_empty_in_seg_and_sr(
    small_cardiac_3d, tmp_path, version
):
    missing = ("PatientBirthDate", "StudyID", "AccessionNumber", "ReferringPhysicianName",
               "StudyTime")  # fmt: skip
    folder = tmp_path / "dcm"
    for path in write_dicom_series(small_cardiac_3d.image, folder):
        ds = pydicom.dcmread(path)
        for keyword in missing:
            delattr(ds, keyword)
        ds.PatientSex = "U"  # not a DICOM value (M, F, O): highdicom refuses it
        ds.save_as(path)
    source = load_volume(folder)
    labels = small_cardiac_3d.labels.array.astype(np.uint8)
    measurement = measure_ventricle(labels, source.affine, surfaces="smoothed").to_json()
    outputs = build_dicom_outputs(source, labels, version, Task.WALL_THICKNESS, measurement)
    assert outputs.unavailable == {}
    assert sorted(outputs.files) == ["report-sr.dcm", "seg-ed.dcm"]
    for name, ds in outputs.files.items():
        assert ds.PatientSex == "" and ds.StudyID == "" and ds.PatientBirthDate == ""
        assert ds.StudyInstanceUID == source.dicom.study_uid
        ds.save_as(tmp_path / name)
        assert dciodvfy_errors(tmp_path / name) == [], name
    assert source.dicom.datasets[0].PatientSex == "U"  # the sources are not changed


def test_the_sr_carries_each_aha_segments_thickness_with_its_coded_site(
    small_cardiac_3d, tmp_path, version
):
    from sitetune.imaging.codes import AHA_SEGMENT_CODES

    folder = tmp_path / "dcm"
    write_dicom_series(small_cardiac_3d.image, folder)
    source = load_volume(folder)
    labels = small_cardiac_3d.labels.array.astype(np.uint8)
    measurement = measure_ventricle(labels, source.affine, surfaces="smoothed").to_json()
    segments = {s["id"]: s for s in measurement["segments"]}
    assert len(segments) == 17 and all(s["ed"] for s in segments.values())
    outputs = build_dicom_outputs(source, labels, version, Task.WALL_THICKNESS, measurement)
    sr = outputs.files["report-sr.dcm"]
    sr.save_as(tmp_path / "sr.dcm")
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    found = {}
    for site in _items(sr, "CODE"):
        if site.ConceptNameCodeSequence[0].CodeValue != "363698007":  # Finding Site
            continue
        code = site.ConceptCodeSequence[0].CodeValue
        for segment, wall in AHA_SEGMENT_CODES.items():
            if wall.value == code:
                found[segment] = site
    assert sorted(found) == list(range(1, 18)), "every segment as a coded finding site"
    medians = {round(float(n.MeasuredValueSequence[0].NumericValue), 3) for n in _items(sr, "NUM")}
    assert {segments[k]["ed"]["median"] for k in segments} <= medians
