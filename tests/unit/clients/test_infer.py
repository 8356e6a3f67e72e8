"""``sitetune segment|thickness|lesions``: input discovery, output planning, the files
written and the exit codes, against a loopback server answering the documented JSON."""

from __future__ import annotations

import json
import zipfile

import pytest

from sitetune.clients import infer
from sitetune.clients.cli import EXIT_CODES, build_parser, main
from sitetune.clients.client import SitetuneClient
from sitetune.clients.infer import InputKind
from sitetune.clients.results import Inference, Output, ThicknessResult

from .conftest import Answer

TOKEN = "clinical-token"
DICM = b"\x00" * 128 + b"DICM" + b"\x00" * 16
NIFTI_REASON = "the input was NIfTI; SEG and SR reference DICOM source images"


def run(fake, *argv: str) -> int:
    return main(["--url", fake.url, "--token", TOKEN, *argv])


def available(url: str, media_type: str, **extra) -> dict:
    return {"available": True, "url": url, "media_type": media_type, **extra}


def segment_answer(result_id: str = "r1", dicom: bool = False) -> dict:
    base = f"/v1/results/{result_id}"
    outputs = {
        "summary": available(base, "application/json"),
        "mask": available(f"{base}/mask", "application/gzip"),
    }
    if dicom:
        outputs |= {
            "seg": available(f"{base}/seg", "application/dicom", phases=["0"]),
            "sr": available(f"{base}/sr", "application/dicom"),
        }
    else:
        outputs |= {
            "seg": {"available": False, "reason": NIFTI_REASON},
            "sr": {"available": False, "reason": NIFTI_REASON},
        }
    return {
        "result_id": result_id,
        "model": {"name": "lv-ct", "version": "1"},
        "backend": "onnxruntime:cpu",
        "labels": {"LV blood pool": {"volume_ml": 120.25}, "LV myocardium": {"volume_ml": 95.5}},
        "input": {"shape": [40, 40, 12], "spacing_mm": [2.5, 2.5, 3.5], "phases": 1},
        "outputs": outputs,
        "provenance": {"model": "lv-ct"},
        "timings_ms": {"total": 812.5},
        "a_field_from_a_newer_server": {"kept": True},
    }


def serve_result(fake, result_id: str = "r1", dicom: bool = False) -> None:
    base = f"/v1/results/{result_id}"
    fake.on("GET", f"{base}/mask", Answer(body=b"mask-" + result_id.encode()))
    if dicom:
        fake.on("GET", f"{base}/seg", Answer(body=b"seg", headers={"Content-Type": "x"}))
        fake.on("GET", f"{base}/sr", Answer(body=b"sr"))


@pytest.fixture
def nifti(tmp_path):
    path = tmp_path / "heart.nii.gz"
    path.write_bytes(b"\x1f\x8b" + b"x" * 300_000)  # a few upload chunks
    return path


def leftovers(folder) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.startswith(".")]


# -- discovery -------------------------------------------------------------------------


def test_a_file_is_one_case_written_beside_it_by_default(tmp_path):
    for name, kind, case in [
        ("heart.nii.gz", InputKind.NIFTI, "heart"),
        ("Brain.NII", InputKind.NIFTI, "Brain"),
        ("study.zip", InputKind.DICOM_ZIP, "study"),
    ]:
        path = tmp_path / name
        path.write_bytes(b"x")
        found = infer.discover(path)
        assert not found.batch
        assert found.cases == [infer.Case(case, path, kind, tmp_path / f"{case}.sitetune")]
        assert infer.discover(path, tmp_path / "out").cases[0].output_dir == tmp_path / "out"


def test_a_folder_with_dicom_files_is_one_case(tmp_path):
    series = tmp_path / "series"
    (series / "nested").mkdir(parents=True)
    (series / "IM0001").write_bytes(DICM)  # no suffix: found by the preamble
    found = infer.discover(series)
    assert (found.batch, [c.kind for c in found.cases]) == (False, [InputKind.DICOM_FOLDER])
    assert found.cases[0].output_dir == tmp_path / "series.sitetune"
    dcm = tmp_path / "other"
    dcm.mkdir()
    (dcm / "slice.DCM").write_bytes(b"no preamble")
    assert infer.discover(dcm).cases[0].kind is InputKind.DICOM_FOLDER


def test_any_other_folder_is_a_batch_of_files_and_sub_folders(tmp_path):
    batch = tmp_path / "studies"
    for folder in ("c", "c.sitetune", ".hidden", "e"):
        (batch / folder).mkdir(parents=True)
    (batch / "c" / "IM1").write_bytes(DICM)
    for name in ("a.nii.gz", "a.nii", "b.zip", "notes.txt", ".DS_Store"):
        (batch / name).write_bytes(b"x")
    found = infer.discover(batch)
    assert found.batch
    names = [(c.name, c.path.name, c.kind) for c in found.cases]
    assert names == [
        ("a", "a.nii", InputKind.NIFTI),
        ("a-2", "a.nii.gz", InputKind.NIFTI),  # two cases, two folders
        ("b", "b.zip", InputKind.DICOM_ZIP),
        ("c", "c", InputKind.DICOM_FOLDER),
        ("e", "e", InputKind.DICOM_FOLDER),  # the service says what it makes of it
    ]
    assert [c.output_dir for c in found.cases][:2] == [
        tmp_path / "studies.sitetune" / "a",
        tmp_path / "studies.sitetune" / "a-2",
    ]
    assert [p.name for p in found.ignored] == ["c.sitetune", "notes.txt"]
    assert infer.discover(batch, tmp_path / "o").cases[0].output_dir == tmp_path / "o" / "a"


@pytest.mark.parametrize(
    ("name", "message"),
    [("missing.nii.gz", "does not exist"), ("notes.txt", "is not a NIfTI file"),
     ("empty", "holds no case")],
)  # fmt: skip
def test_inputs_that_are_no_case_are_usage_errors(tmp_path, capsys, name, message):
    path = tmp_path / name
    if name == "notes.txt":
        path.write_text("x")
    elif name == "empty":
        (path / ".git").mkdir(parents=True)
        (path / "readme.md").write_text("x")
    with pytest.raises(ValueError, match=message):
        infer.discover(path)
    assert main(["--url", "http://127.0.0.1:9", "segment", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_a_dicom_folder_is_zipped_with_relative_names_hidden_files_left_out(tmp_path):
    folder = tmp_path / "study"
    (folder / "series2").mkdir(parents=True)
    (folder / ".cache").mkdir()
    (folder / "IM1").write_bytes(DICM + b"1")
    (folder / "series2" / "IM2").write_bytes(DICM + b"2")
    (folder / ".DS_Store").write_bytes(b"x")
    (folder / ".cache" / "x").write_bytes(b"x")
    case = infer.discover(folder).cases[0]
    with infer.upload_path(case) as path:
        assert path.suffix == ".zip" and path.parent != folder
        with zipfile.ZipFile(path) as archive:
            assert archive.namelist() == ["IM1", "series2/IM2"]
            assert archive.read("series2/IM2") == DICM + b"2"
    assert not path.exists() and not path.parent.exists()


def test_the_arguments_parse(tmp_path):
    args = build_parser().parse_args(
        ["thickness", "in.zip", "-o", "out", "--model", "lv-ct", "--version", "3",
         "--series", "1.2.3", "-q", "--json"]
    )  # fmt: skip
    assert (args.command, args.input, args.output, args.model) == ("thickness", "in.zip",
                                                                    "out", "lv-ct")  # fmt: skip
    assert (args.version, args.series, args.quiet, args.json) == ("3", "1.2.3", True, True)
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["lesions"])  # INPUT missing
    assert exit_.value.code == 2


def test_the_exit_codes_are_the_help_epilog_and_the_module_docstring(capsys):
    import sitetune.clients.cli as cli

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert EXIT_CODES in out and out.count("exit codes:") == 1
    for code in ("0", "1", "2", "3", "4", "130"):
        assert f"\n  {code} " in EXIT_CODES
    assert EXIT_CODES.partition("\n")[2] in cli.__doc__


# -- outputs ---------------------------------------------------------------------------


def test_outputs_are_planned_from_the_answer():
    outputs = {
        "summary": Output(available=True, url="/v1/results/r/", media_type="application/json"),
        "mask": Output(available=True, url="/v1/results/r/mask", media_type="application/gzip"),
        # the caller's own input, kept for the console's viewer: not downloaded again
        "image": Output(available=True, url="/v1/results/r/image", media_type="application/gzip"),
        "thickness": Output(
            available=True, url="/v1/results/r/thickness", media_type="application/gzip"
        ),
        "seg": Output.model_validate(
            available("/v1/results/r/seg", "application/dicom", phases=["ed", "es"])
        ),
        "sr": Output(available=False, reason="no frame of reference"),
        "bullseye": Output(available=True, url="/v1/results/r/b", media_type="image/png"),
        "bullseye_svg": Output(
            available=True, url="/v1/results/r/bullseye.svg", media_type="image/svg+xml"
        ),
        "elsewhere": Output(available=True, url="https://x.example/y", media_type="image/png"),
    }
    planned, skipped = infer.plan_outputs(outputs)
    assert [(p.filename, p.url, p.params) for p in planned] == [
        ("mask.nii.gz", "/v1/results/r/mask", None),
        ("thickness.nii.gz", "/v1/results/r/thickness", None),
        ("seg-ed.dcm", "/v1/results/r/seg", {"phase": "ed"}),
        ("seg-es.dcm", "/v1/results/r/seg", {"phase": "es"}),
        ("bullseye.png", "/v1/results/r/b", None),
        ("bullseye.svg", "/v1/results/r/bullseye.svg", None),  # the service's name
    ]
    assert skipped == {
        "sr": "no frame of reference",
        "elsewhere": "https://x.example/y is not a path on the service",
    }
    phases = Output.model_validate(available("/s", "application/dicom", phases=[0, 1]))
    assert [(p.filename, p.params) for p in infer.plan_outputs({"seg": phases})[0]] == [
        ("seg-phase-0.dcm", {"phase": "0"}),
        ("seg-phase-1.dcm", {"phase": "1"}),
    ]
    one = Output.model_validate(available("/s", "application/dicom", phases=["0"]))
    assert [(p.filename, p.params) for p in infer.plan_outputs({"seg": one})[0]] == [
        ("seg.dcm", {"phase": "0"})
    ]


def test_typed_results_parse_and_keep_the_answer():
    answer = {
        "result_id": "r2",
        "model": {"name": "lv-ct", "version": 3},
        "phases": [{"index": 0, "role": "ED", "thickness_mm": {"median": 8.5, "p95": 11.0},
                    "volumes_ml": {"blood_pool": 120.0, "myocardium": 95.0}},
                   {"index": 1, "role": None, "thickness_mm": None, "volumes_ml": {}}],
        "ed": {"index": 0, "role": "ED", "thickness_mm": {"median": 8.5}},
        "es": None,
        "thickening_pct": None,
        "segments": [{"id": 1, "name": "basal anterior", "ed": {"mean": 8.0}}],
        "outputs": {"seg": {"available": True, "url": "/s", "phases": ["ed"]}},
        "new_field": [1, 2],
    }  # fmt: skip
    result = ThicknessResult.from_answer(answer)
    assert result.model.version == "3" and result.ed.thickness_mm.median == 8.5
    assert result.phases[1].thickness_mm is None and result.segments[0].id == 1
    assert result.outputs["seg"].phases == ["ed"] and result.answer is answer
    assert result.model_extra == {"new_field": [1, 2]}
    assert Inference("lesions").route == "/v1/lesion-volume"


# -- commands against the fake service -------------------------------------------------


def test_segment_uploads_with_progress_and_writes_the_json_and_the_mask(fake, nifti, capsys):
    fake.on("POST", "/v1/segment", Answer(body=segment_answer()))
    serve_result(fake)
    argv = ["segment", str(nifti), "--model", "lv-ct", "--version", "2", "--series", "7"]
    assert run(fake, *argv) == 0
    out = nifti.parent / "heart.sitetune"
    assert sorted(p.name for p in out.iterdir()) == ["mask.nii.gz", "result.json"]
    assert (out / "mask.nii.gz").read_bytes() == b"mask-r1"
    assert json.loads((out / "result.json").read_text()) == segment_answer()
    fields, files = fake.sent("POST", "/v1/segment")[0].form()
    assert fields == {"model": "lv-ct", "version": "2", "series": "7"}
    assert files["file"] == ("heart.nii.gz", nifti.read_bytes())
    assert fake.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert "content-length" in fake.requests[0].headers  # streamed, but sized

    captured = capsys.readouterr()
    err = captured.err.splitlines()
    uploads = [line for line in err if "uploading" in line]
    assert uploads[0] == "heart: uploading 293.0 KB   0%"
    assert uploads[-1] == "heart: uploading 293.0 KB 100%, processing"
    assert [u.split()[-1] for u in uploads[:-1]] == ["0%", "25%", "50%", "75%"]
    assert err[len(uploads)].startswith("heart: processed in ")
    assert f"heart: no seg: {NIFTI_REASON}" in err and f"heart: no sr: {NIFTI_REASON}" in err
    assert err[-1] == f"heart: wrote 2 files to {out}"
    assert captured.out.splitlines() == [
        "result r1  (lv-ct:1, onnxruntime:cpu)",
        "LABEL          VOLUME_ML",
        "LV blood pool  120.25",
        "LV myocardium  95.5",
        f"written to {out}: result.json, mask.nii.gz",
    ]
    assert leftovers(nifti.parent) == []


def test_quiet_and_json(fake, nifti, capsys, tmp_path):
    fake.on("POST", "/v1/segment", Answer(body=segment_answer()))
    serve_result(fake)
    assert run(fake, "--json", "segment", str(nifti), "-q", "-o", str(tmp_path / "o")) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert json.loads(captured.out) == segment_answer()


def test_a_dicom_case_gets_its_seg_and_sr(fake, tmp_path, capsys):
    zipped = tmp_path / "ct.zip"
    zipped.write_bytes(b"PK")
    fake.on("POST", "/v1/segment", Answer(body=segment_answer(dicom=True)))
    serve_result(fake, dicom=True)
    assert run(fake, "segment", str(zipped), "-q") == 0
    out = tmp_path / "ct.sitetune"
    assert sorted(p.name for p in out.iterdir()) == [
        "mask.nii.gz", "result.json", "seg.dcm", "sr.dcm"
    ]  # fmt: skip
    assert (out / "seg.dcm").read_bytes() == b"seg"
    assert fake.sent("GET", "/v1/results/r1/seg")[0].query == {"phase": "0"}
    assert fake.sent("POST", "/v1/segment")[0].form()[1]["file"][0] == "ct.zip"


def test_an_output_found_unavailable_on_request_is_skipped_with_its_reason(fake, nifti, capsys):
    answer = segment_answer(dicom=True)
    answer["outputs"]["seg"]["phases"] = ["ed", "es"]
    fake.on("POST", "/v1/segment", Answer(body=answer))
    serve_result(fake, dicom=True)
    refused = {"error": {"code": "output_unavailable", "message": "result r1 has no SEG: why"}}
    fake.on("GET", "/v1/results/r1/seg", lambda r: Answer(body=b"ed") if r.query["phase"] == "ed"
            else Answer(409, refused))  # fmt: skip
    assert run(fake, "segment", str(nifti)) == 0
    out = nifti.parent / "heart.sitetune"
    assert sorted(p.name for p in out.iterdir()) == ["mask.nii.gz", "result.json", "sr.dcm"]
    written = json.loads((out / "result.json").read_text())
    assert written["outputs"]["seg"] == {"available": False, "reason": "result r1 has no SEG: why"}
    assert "heart: no seg: result r1 has no SEG: why" in capsys.readouterr().err


def test_a_refused_input_prints_code_and_message_and_writes_nothing(fake, nifti, capsys):
    body = {"error": {"code": "single_slice", "message": "the input is a single slice"}}
    fake.on("POST", "/v1/segment", Answer(422, body))
    assert run(fake, "segment", str(nifti)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[-1] == (
        "error: heart: refused (HTTP 422 single_slice): the input is a single slice"
    )
    assert sorted(p.name for p in nifti.parent.iterdir()) == ["heart.nii.gz"]


def test_a_download_that_fails_leaves_nothing_half_written(fake, nifti, capsys):
    fake.on("POST", "/v1/segment", Answer(body=segment_answer(dicom=True)))
    serve_result(fake, dicom=True)
    failing = {"error": {"code": "internal_error", "message": "request id 7"}}
    fake.on("GET", "/v1/results/r1/sr", Answer(500, failing))
    assert run(fake, "segment", str(nifti), "-q") == 1
    assert "error: heart: failed (HTTP 500 internal_error): request id 7" in capsys.readouterr().err
    assert sorted(p.name for p in nifti.parent.iterdir()) == ["heart.nii.gz"]


def test_an_existing_output_folder_keeps_its_other_files(fake, nifti, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "mask.nii.gz").write_bytes(b"old")
    fake.on("POST", "/v1/segment", Answer(body=segment_answer()))
    serve_result(fake)
    assert run(fake, "segment", str(nifti), "-o", str(out), "-q") == 0
    assert sorted(p.name for p in out.iterdir()) == ["mask.nii.gz", "notes.txt", "result.json"]
    assert (out / "mask.nii.gz").read_bytes() == b"mask-r1"
    assert leftovers(tmp_path) == []


def _batch(tmp_path):
    batch = tmp_path / "studies"
    batch.mkdir()
    for name in ("a", "b", "c"):
        (batch / f"{name}.nii.gz").write_bytes(name.encode())
    return batch


def _by_file(request):
    name = request.form()[1]["file"][0]
    if name == "b.nii.gz":
        return Answer(415, {"error": {"code": "unsupported_input", "message": "not NIfTI"}})
    return Answer(body=segment_answer(f"r-{name[0]}"))


def test_a_batch_goes_on_after_a_refused_case_and_sums_up(fake, tmp_path, capsys):
    batch = _batch(tmp_path)
    fake.on("POST", "/v1/segment", _by_file)
    serve_result(fake, "r-a")
    serve_result(fake, "r-c")
    assert run(fake, "segment", str(batch), "--quiet") == 1
    out = tmp_path / "studies.sitetune"
    assert sorted(p.name for p in out.iterdir()) == ["a", "c"]
    assert (out / "c" / "mask.nii.gz").read_bytes() == b"mask-r-c"
    captured = capsys.readouterr()
    assert captured.err == "error: b: refused (HTTP 415 unsupported_input): not NIfTI\n"
    volumes = "LV blood pool 120.2 mL, LV myocardium 95.5 mL"
    rows = [line.split("  ") for line in captured.out.splitlines()]
    assert [[cell.strip() for cell in row if cell.strip()] for row in rows] == [
        ["CASE", "STATUS", "RESULT", "OUTPUT"],
        ["a", "done", volumes, str(out / "a")],
        ["b", "refused", "unsupported_input: not NIfTI", "-"],
        ["c", "done", volumes, str(out / "c")],
        ["2 of 3 cases done"],
    ]
    assert leftovers(tmp_path) == []

    assert run(fake, "--json", "segment", str(batch), "-q", "-o", str(tmp_path / "j")) == 1
    cases = json.loads(capsys.readouterr().out)["cases"]
    assert [(c["case"], c["status"]) for c in cases] == [
        ("a", "done"), ("b", "refused"), ("c", "done")
    ]  # fmt: skip
    assert cases[0]["files"] == ["result.json", "mask.nii.gz"]
    assert cases[0]["result"]["result_id"] == "r-a"
    assert cases[0]["skipped"]["seg"] == NIFTI_REASON
    assert cases[1]["error"] == {"status": 415, "code": "unsupported_input",
                                 "message": "not NIfTI"}  # fmt: skip
    assert cases[1]["output_dir"] is None and cases[1]["result"] is None


def test_a_refused_token_stops_the_batch_with_exit_code_2(fake, tmp_path, capsys):
    batch = _batch(tmp_path)
    body = {"error": {"code": "wrong_role", "message": "pacs (pacs) may not use this route"}}
    fake.on("POST", "/v1/segment", Answer(403, body))
    assert run(fake, "segment", str(batch), "-q") == 2
    assert capsys.readouterr().err == "error: pacs (pacs) may not use this route\n"
    assert len(fake.sent("POST", "/v1/segment")) == 1
    assert not (tmp_path / "studies.sitetune").exists()


def test_an_unreachable_service_exits_3(nifti, capsys):
    assert main(["--url", "http://127.0.0.1:9", "segment", str(nifti), "-q"]) == 3
    assert capsys.readouterr().err.startswith("error: cannot reach http://127.0.0.1:9")


def test_the_client_methods_return_typed_results(fake, nifti):
    answer = {"result_id": "l1", "total_ml": 1.5, "count": 1, "min_lesion_ml": 0.015,
              "connectivity": 26, "lesions": [{"id": 1, "volume_ml": 1.5,
                                               "centroid_mm": [1.0, 2.0, 3.0]}]}  # fmt: skip
    fake.on("POST", "/v1/lesion-volume", Answer(body=answer))
    seen = []
    with SitetuneClient(fake.url, TOKEN) as client:
        result = client.lesion_volume_file(nifti, progress=lambda s, t: seen.append((s, t)))
        assert result.count == 1 and result.lesions[0].centroid_mm == [1.0, 2.0, 3.0]
        assert result.answer == answer
        size = nifti.stat().st_size
        assert seen[-1] == (size, size) and len(seen) > 2
        with pytest.raises(ValueError, match="not on the service"):
            client.download("http://elsewhere.example/x", nifti.parent / "x")


def test_a_terminal_gets_the_percentage_redrawn_in_place(tmp_path):
    import io

    from sitetune.clients.cli import _StderrReporter

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    reporter = _StderrReporter(quiet=False, stream=stream)
    case = infer.Case("heart", tmp_path / "heart.nii.gz", InputKind.NIFTI, tmp_path / "o")
    for sent in (0, 500, 500, 1000):
        reporter.uploading(case, sent, 1000)
    reporter.skipped(case, "seg", "NIfTI input")
    assert stream.getvalue() == (
        "\rheart: uploading 1000 B   0%\x1b[K\rheart: uploading 1000 B  50%\x1b[K"
        "\rheart: uploading 1000 B 100%, processing\x1b[K\nheart: no seg: NIfTI input\n"
    )
    quiet = Terminal()
    _StderrReporter(quiet=True, stream=quiet).uploading(case, 10, 1000)
    assert quiet.getvalue() == ""
