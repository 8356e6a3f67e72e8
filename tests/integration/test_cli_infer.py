"""``sitetune segment|thickness|lesions`` against the real service: files written where
they belong, on the input's grid, DICOM outputs readable, a batch with a refused case."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest

from sitetune.clients.cli import main
from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.nifti import save_nifti
from sitetune.imaging.phantoms.brain import brain_phantom
from tests.server import TOKENS


def sitetune(server, *argv: str) -> int:
    return main(["--url", server.base_url, "--token", TOKENS["clinical"], *argv])


def _nifti(volume, path):
    save_nifti(volume.array.astype(np.int16), path, affine=volume.affine)
    return path


def _leftovers(folder) -> list[str]:
    """Staging folders or files a run should not leave behind."""
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or "partial" in p.name]


def test_segment_a_nifti_writes_json_and_the_mask_on_the_input_grid(
    server, small_cardiac_3d, tmp_path, capsys
):
    image = small_cardiac_3d.image
    path = _nifti(image, tmp_path / "heart.nii.gz")
    assert sitetune(server, "segment", str(path), "--model", "lv-ct") == 0
    out = tmp_path / "heart.sitetune"  # the default: beside the input
    assert sorted(p.name for p in out.iterdir()) == ["mask.nii.gz", "result.json"]
    captured = capsys.readouterr()
    assert "heart: uploading" in captured.err and "100%" in captured.err
    assert "heart: processed in" in captured.err
    assert "heart: no seg: the input was NIfTI" in captured.err
    assert "LV blood pool" in captured.out and str(out) in captured.out

    result = json.loads((out / "result.json").read_text())
    assert result["model"]["name"] == "lv-ct"
    assert result["outputs"]["mask"]["available"] is True
    mask = nib.load(out / "mask.nii.gz")
    assert mask.shape == image.shape
    np.testing.assert_allclose(mask.affine, nib.load(path).affine, atol=1e-4)
    labels = np.asarray(mask.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2} and (labels == 1).any()

    # --json prints the answer; --quiet silences the progress; -o names the folder
    chosen = tmp_path / "chosen"
    assert sitetune(server, "--json", "segment", str(path), "--model", "lv-ct", "-o",
                    str(chosen), "--quiet") == 0  # fmt: skip
    captured = capsys.readouterr()
    assert captured.err == ""
    answer = json.loads(captured.out)
    assert answer == json.loads((chosen / "result.json").read_text())
    assert answer["result_id"] != result["result_id"]
    assert _leftovers(tmp_path) == []


def test_thickness_of_a_dicom_folder_writes_json_segs_and_sr(
    server, oblique_cardiac, tmp_path, capsys
):
    folder = tmp_path / "cine"
    write_dicom_series(oblique_cardiac.image, folder)
    out = tmp_path / "results"
    assert sitetune(server, "thickness", str(folder), "-o", str(out)) == 0
    files = {p.name for p in out.iterdir()}
    expected = {"mask.nii.gz", "result.json", "seg-ed.dcm", "seg-es.dcm", "sr.dcm",
                "thickness.nii.gz"}  # fmt: skip
    assert expected <= files  # and what else the service lists (a bullseye, ...)
    result = json.loads((out / "result.json").read_text())
    fetched = {k for k, v in result["outputs"].items() if v["available"]} - {"summary", "image"}
    assert len(files) == len(fetched) + 2  # result.json; two SEGs (image: the caller's input)
    assert "image.nii.gz" not in files
    assert result["outputs"]["seg"]["phases"] == ["ed", "es"]
    assert result["ed"]["thickness_mm"]["median"] > 0
    source_uids = {pydicom.dcmread(p).SeriesInstanceUID for p in folder.iterdir()}
    for name in ("seg-ed.dcm", "seg-es.dcm"):
        seg = pydicom.dcmread(out / name)
        assert seg.Modality == "SEG"
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID in source_uids
    sr = pydicom.dcmread(out / "sr.dcm")
    assert sr.Modality == "SR"
    thickness = nib.load(out / "thickness.nii.gz")
    assert thickness.shape[:3] == oblique_cardiac.image.shape[:3]
    captured = capsys.readouterr()
    assert "ED median" in captured.out and "thickening" in captured.out
    assert _leftovers(tmp_path) == []


def test_lesions_of_a_flair_nifti_write_the_lesion_map(server, tmp_path, capsys):
    case = brain_phantom(21, "A", n_lesions=8)
    path = _nifti(case.image, tmp_path / "flair.nii")
    assert sitetune(server, "--json", "lesions", str(path), "--quiet") == 0
    out = tmp_path / "flair.sitetune"
    assert sorted(p.name for p in out.iterdir()) == ["lesions.nii.gz", "mask.nii.gz",
                                                     "result.json"]  # fmt: skip
    answer = json.loads(capsys.readouterr().out)
    assert answer["count"] >= 1 and answer["model"]["name"] == "flair-lesion"
    lesion_map = np.asarray(nib.load(out / "lesions.nii.gz").dataobj)
    assert lesion_map.shape == case.image.shape
    assert sorted(int(v) for v in np.unique(lesion_map) if v) == [
        lesion["id"] for lesion in sorted(answer["lesions"], key=lambda les: les["id"])
    ]


def test_a_batch_writes_the_good_cases_and_names_the_refused_one(
    server, small_cardiac_3d, tmp_path, capsys
):
    batch = tmp_path / "studies"
    batch.mkdir()
    _nifti(small_cardiac_3d.image, batch / "a.nii.gz")
    write_dicom_series(small_cardiac_3d.image, batch / "b")
    (batch / "broken.nii.gz").write_text("not an image, only named like one\n")
    (batch / "notes.txt").write_text("left out: no case\n")

    assert sitetune(server, "segment", str(batch), "--model", "lv-ct") == 1
    out = tmp_path / "studies.sitetune"
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]  # nothing for "broken"
    assert sorted(p.name for p in (out / "a").iterdir()) == ["mask.nii.gz", "result.json"]
    assert sorted(p.name for p in (out / "b").iterdir()) == ["mask.nii.gz", "result.json",
                                                             "seg.dcm", "sr.dcm"]  # fmt: skip
    assert pydicom.dcmread(out / "b" / "seg.dcm").Modality == "SEG"
    assert _leftovers(tmp_path) == []

    captured = capsys.readouterr()
    error = next(line for line in captured.err.splitlines() if line.startswith("error:"))
    assert error.startswith("error: broken: refused (HTTP 4")
    assert "left out" in captured.err and "notes.txt" in captured.err
    table = captured.out.splitlines()
    assert table[0].split() == ["CASE", "STATUS", "RESULT", "OUTPUT"]
    rows = {line.split()[0]: line for line in table[1:-1]}
    assert rows["a"].split()[1] == rows["b"].split()[1] == "done"
    assert rows["broken"].split()[1] == "refused"
    code = error.split("(", 1)[1].split(")")[0].split()[-1]  # "(HTTP 422 <code>)"
    assert code in rows["broken"]
    assert table[-1] == "2 of 3 cases done"


@pytest.mark.parametrize("token", ["not-a-token", TOKENS["pacs"]])
def test_a_token_the_service_refuses_stops_the_run_with_exit_code_2(
    server, small_cardiac_3d, tmp_path, capsys, token
):
    path = _nifti(small_cardiac_3d.image, tmp_path / "heart.nii.gz")
    argv = ["--url", server.base_url, "--token", token, "segment", str(path), "--quiet"]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "heart.sitetune").exists()
