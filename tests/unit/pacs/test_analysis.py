"""A received series -> SEG(s) and a TID 1500 SR for delivery, with the summary the PACS
worker records; the committed lv-ct model in a real ONNX Runtime session, a real SQLite
registry and DICOM series written from phantoms."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from sitetune.analysis.pipeline import Pipeline
from sitetune.errors import InvalidInput, PayloadTooLarge
from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.phantoms.cardiac import cardiac_phantom
from sitetune.imaging.volume import ImageLimits
from sitetune.measure.ventricle import measure_ventricle
from sitetune.models.engines import EngineKind
from sitetune.models.serving import ModelServer, ServingConfig
from sitetune.pacs.analysis import analyse
from tests.conftest import SMALL_SPACING
from tests.unit.imaging.test_sr import _numbers
from tests.unit.models.test_serving import builtin_registry

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
WALL_THICKNESS = "122445"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    folder = tmp_path_factory.mktemp("pacs-analysis")
    config = ServingConfig(engine=EngineKind.ONNXRUNTIME, threads=2)
    return Pipeline(ModelServer(builtin_registry(folder), config, folder / "engine-cache"))


@pytest.fixture(scope="module")
def cardiac_4d():
    return cardiac_phantom(5, "A", phases=3, spacing=SMALL_SPACING)


def _series(image, folder, **change):
    """``image`` written as DICOM (one series per phase), with attributes changed (None:
    removed) in every file."""
    files = write_dicom_series(image, folder, series_description="heart")
    for path in files if change else []:
        ds = pydicom.dcmread(path)
        for keyword, value in change.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.save_as(path)
    return files


def test_a_4d_series_gives_ed_and_es_segs_and_an_sr_with_the_measured_numbers(
    pipeline, cardiac_4d, tmp_path
):
    files = _series(cardiac_4d.image, tmp_path / "in")
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    series_of_phase = {}
    for ds in sources:
        series_of_phase[int(ds.TemporalPositionIdentifier) - 1] = ds.SeriesInstanceUID
    out = analyse(files, pipeline, "lv-ct", tmp_path / "out")

    summary = out.summary
    assert summary["model"] == {"name": "lv-ct", "version": "1"}
    assert summary["backend"] == "onnxruntime:CPUExecutionProvider"
    assert summary["task"] == "wall_thickness"
    assert summary["input"] | {"format": "dicom", "modality": "CT", "phases": 3} == summary["input"]
    assert summary["input"]["shape"] == list(cardiac_4d.image.array.shape)
    assert (
        summary["provenance"]["model"]["card_sha256"]
        == pipeline.models.registry.get("lv-ct", 1).card.digest
    )
    assert {"load", "outputs", "total"} <= set(summary["timings_ms"])

    # the numbers are those of the true labels, to a fraction of a voxel
    thickness = summary["thickness"]
    truth = measure_ventricle(
        cardiac_4d.labels.array, cardiac_4d.labels.affine, cardiac_4d.labels.phases
    ).to_json()
    for role in ("ed", "es"):
        assert thickness[role]["index"] == truth[role]["index"]
        measured, expected = thickness[role]["thickness_mm"], truth[role]["thickness_mm"]
        assert measured["median"] == pytest.approx(expected["median"], abs=0.5)

    # the files written are the ones listed, in the source study, with their UIDs
    assert [(f["kind"], f["name"]) for f in out.files] == [
        ("seg", "seg-ed.dcm"), ("seg", "seg-es.dcm"), ("sr", "report-sr.dcm"),
    ]  # fmt: skip
    assert summary["outputs"] == {"files": [f["name"] for f in out.files], "unavailable": {}}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f["name"] for f in out.files
    )
    written = {f["name"]: pydicom.dcmread(f["path"]) for f in out.files}
    for item in out.files:
        ds = written[item["name"]]
        assert str(ds.SOPInstanceUID) == item["sop_instance_uid"]
        assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    for name, role in (("seg-ed.dcm", "ed"), ("seg-es.dcm", "es")):
        seg = written[name]
        assert seg.SOPClassUID == SEG_CLASS
        referenced = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
        assert referenced == series_of_phase[thickness[role]["index"]]  # its own phase
    sr = written["report-sr.dcm"]
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    reported = {value for code, value in _numbers(sr) if code == WALL_THICKNESS}
    for role in ("ed", "es"):
        stats = thickness[role]["thickness_mm"]
        assert {stats["median"], stats["p95"], stats["max"]} <= reported


def test_without_a_frame_of_reference_the_sr_is_delivered_and_the_seg_says_why(
    pipeline, small_cardiac_3d, tmp_path
):
    files = _series(small_cardiac_3d.image, tmp_path / "in", FrameOfReferenceUID=None)
    out = analyse(files, pipeline, "lv-ct", tmp_path / "out")
    assert [(f["kind"], f["name"]) for f in out.files] == [("sr", "report-sr.dcm")]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report-sr.dcm"]
    outputs = out.summary["outputs"]
    assert outputs["files"] == ["report-sr.dcm"]
    assert set(outputs["unavailable"]) == {"seg"}
    assert "Frame of Reference" in outputs["unavailable"]["seg"]
    median = out.summary["thickness"]["phases"][0]["thickness_mm"]["median"]
    sr = pydicom.dcmread(out.files[0]["path"])
    assert (WALL_THICKNESS, median) in _numbers(sr)


def test_derived_objects_sent_back_with_the_study_are_skipped(pipeline, small_cardiac_3d, tmp_path):
    """A PACS that re-sends the study includes our own SEG and SR: the analysis reads the
    images only, and measures the same."""
    files = _series(small_cardiac_3d.image, tmp_path / "in")
    first = analyse(files, pipeline, "lv-ct", tmp_path / "first")
    again = analyse(
        files + [p for p in (tmp_path / "first").iterdir()], pipeline, "lv-ct", tmp_path / "again"
    )
    assert again.summary["input"] == first.summary["input"]
    assert again.summary["thickness"]["phases"] == first.summary["thickness"]["phases"]
    assert (
        again.summary["provenance"]["input_sha256"] == first.summary["provenance"]["input_sha256"]
    )


def test_a_series_for_another_modality_is_refused_and_nothing_is_written(
    pipeline, small_cardiac_3d, tmp_path
):
    files = _series(small_cardiac_3d.image, tmp_path / "in", Modality="MR")
    with pytest.raises(InvalidInput, match="reads CT images; the input is MR") as raised:
        analyse(files, pipeline, "lv-ct", tmp_path / "out")
    assert raised.value.code == "wrong_modality"
    assert not (tmp_path / "out").exists()


def test_a_series_over_the_voxel_limit_is_refused_before_it_is_segmented(
    pipeline, small_cardiac_3d, tmp_path
):
    files = _series(small_cardiac_3d.image, tmp_path / "in")
    limits = ImageLimits(max_voxels=int(np.prod(small_cardiac_3d.image.shape)) - 1)
    with pytest.raises(PayloadTooLarge) as raised:
        analyse(files, pipeline, "lv-ct", tmp_path / "out", limits)
    assert raised.value.status == 413
    assert not (tmp_path / "out").exists()


def test_files_without_any_image_are_refused(pipeline, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"not DICOM" * 20)
    with pytest.raises(InvalidInput, match="no DICOM image instances") as raised:
        analyse([junk], pipeline, "lv-ct", tmp_path / "out")
    assert raised.value.code == "no_images"
    assert not (tmp_path / "out").exists()
