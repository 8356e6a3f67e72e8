"""PACS integration against a real Orthanc (DICOMweb client and C-STORE SCP), dcmtk's
``dcmsend`` / ``echoscu`` and the real service with its PACS worker.

The service's routing file (conftest `pacs_config`) sends results of "heart" / "flair"
series back to Orthanc over STOW-RS, of "via dimse" series over C-STORE, and of "retry"
series to a second Orthanc that is down until the retry test starts it.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest

from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.phantoms.brain import brain_phantom
from sitetune.imaging.phantoms.cardiac import cardiac_phantom
from tests.conftest import dciodvfy_errors
from tests.integration.orthanc import Orthanc, free_port
from tests.server import NO_SEG_PORT, ORTHANC_PORTS, TOKENS

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
WALL_THICKNESS = "122445"
DERIVATION = "121401"
STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=b0undary'


@pytest.fixture(scope="module")
def cardiac():
    return cardiac_phantom(412, "A", phases=3, spacing=(1.5, 1.5, 1.5))


@pytest.fixture(scope="module")
def flair():
    return brain_phantom(21, "A", n_lesions=8)


def _write(image, folder: Path, description: str) -> tuple[list[Path], str]:
    files = write_dicom_series(image, folder, series_description=description)
    return files, str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def _wait(what: str, probe, timeout: float = 180.0, server=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    log = server.log.read_text()[-4000:] if server is not None else ""
    pytest.fail(f"timed out waiting for {what}\n{log}")


def _results_in(orthanc: Orthanc, study_uid: str) -> dict[str, list[pydicom.Dataset]] | None:
    """SEG and SR objects of a study in Orthanc, once the SR is there."""
    series = orthanc.series_of_study(study_uid)
    by_modality: dict[str, list] = {}
    for s in series:
        modality = s["MainDicomTags"].get("Modality")
        if modality in ("SEG", "SR"):
            for raw in orthanc.instance_files(s):
                by_modality.setdefault(modality, []).append(pydicom.dcmread(io.BytesIO(raw)))
    return by_modality if "SR" in by_modality else None


def _analysis(server, study_uid: str) -> dict:
    with server.client("ops") as ops:
        analyses = ops.get("/v1/pacs/analyses").json()["analyses"]
        found = [a for a in analyses if a["study_uid"] == study_uid]
        assert found, f"no analysis for the study; analyses: {analyses}"
        return ops.get(f"/v1/pacs/analyses/{found[0]['id']}").json()


def _numbers(sr: pydicom.Dataset) -> list[tuple[str, str | None, float]]:
    """(concept code, derivation code, value) of every NUM item in the SR tree."""
    out = []

    def walk(items):
        for item in items:
            if item.ValueType == "NUM":
                derivation = None
                for child in item.get("ContentSequence", []):
                    if child.ConceptNameCodeSequence[0].CodeValue == DERIVATION:
                        derivation = child.ConceptCodeSequence[0].CodeValue
                value = float(item.MeasuredValueSequence[0].NumericValue)
                out.append((item.ConceptNameCodeSequence[0].CodeValue, derivation, value))
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return out


def _check_results(found, study_uid: str, source_series: set[str], tmp_path: Path) -> None:
    """SEGs and SR in the study, referencing the source, valid per dciodvfy."""
    for ds in [*found["SEG"], *found["SR"]]:
        assert ds.StudyInstanceUID == study_uid
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path)
        assert dciodvfy_errors(path) == [], f"dciodvfy errors in {ds.Modality}"
    for seg in found["SEG"]:
        assert seg.SOPClassUID == SEG_CLASS
        assert {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence} <= source_series
    (sr,) = found["SR"]
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    evidence = {
        series.SeriesInstanceUID: {i.ReferencedSOPInstanceUID for i in series.ReferencedSOPSequence}
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
    }
    seg_uids = {seg.SOPInstanceUID for seg in found["SEG"]}
    assert seg_uids <= set().union(*evidence.values()), "the SR must reference every SEG"
    assert source_series <= set(evidence), "the SR must reference the source series"


def test_orthanc_stows_a_cardiac_study_and_gets_seg_and_sr_back(server, orthanc, cardiac, tmp_path):
    files, study_uid = _write(cardiac.image, tmp_path / "ct", "cine heart")
    orthanc_study = orthanc.upload(files)
    with orthanc.client() as c:
        sent = c.post("/dicom-web/servers/sitetune/stow", json={"Resources": [orthanc_study]})
    assert sent.status_code == 200, sent.text  # Orthanc checks one reference per instance
    found = _wait("SEG + SR in Orthanc", lambda: _results_in(orthanc, study_uid), server=server)
    sources = {str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in files}
    _check_results(found, study_uid, sources, tmp_path)
    assert len(found["SEG"]) == 2, "one SEG per measured phase (ED, ES)"

    analysis = _analysis(server, study_uid)
    assert analysis["state"] == "done" and analysis["route"] == "cardiac-ct"
    assert len(analysis["series_uids"]) == 3, "one series per phase, analysed as one study"
    ed, es = analysis["summary"]["thickness"]["ed"], analysis["summary"]["thickness"]["es"]
    numbers = _numbers(found["SR"][0])
    for phase in (ed, es):
        for key, code in (("median", "373099004"), ("p95", "371889001"), ("max", "56851009")):
            assert any(
                name == WALL_THICKNESS and d == code and np.isclose(v, phase["thickness_mm"][key])
                for name, d, v in numbers
            ), f"{phase['role']} {key} thickness missing from the SR"
    assert [d["state"] for d in analysis["deliveries"]] == ["delivered"]


def test_orthanc_stows_a_flair_series_and_gets_lesion_seg_and_sr_back(
    server, orthanc, flair, tmp_path
):
    files, study_uid = _write(flair.image, tmp_path / "mr", "FLAIR axial")
    with orthanc.client() as c:
        sent = c.post(
            "/dicom-web/servers/sitetune/stow", json={"Resources": [orthanc.upload(files)]}
        )
    assert sent.status_code == 200, sent.text
    found = _wait("SEG + SR in Orthanc", lambda: _results_in(orthanc, study_uid), server=server)
    source = {str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)}
    _check_results(found, study_uid, source, tmp_path)
    analysis = _analysis(server, study_uid)
    lesions = analysis["summary"]["lesions"]
    # the objects can also be fetched from the service, until they expire
    with server.client("pacs") as client:
        url = f"/v1/pacs/analyses/{analysis['id']}/files"
        sr = client.get(f"{url}/report-sr.dcm")
        assert sr.status_code == 200 and sr.headers["content-type"] == "application/dicom"
        assert (
            pydicom.dcmread(io.BytesIO(sr.content)).SOPInstanceUID == found["SR"][0].SOPInstanceUID
        )
        assert client.get(f"{url}/nothing.dcm").json()["error"]["code"] == "file_not_found"
        output = server.data_dir / "artifacts" / "pacs" / "outputs" / analysis["id"]
        (output / "seg-lesions.dcm").unlink()
        expired = client.get(f"{url}/seg-lesions.dcm")
        assert expired.status_code == 404 and expired.json()["error"]["code"] == "file_expired"
    numbers = _numbers(found["SR"][0])
    assert ("246206008", None, float(lesions["count"])) in numbers
    assert any(n == "118565006" and np.isclose(v, lesions["total_ml"], atol=1e-4)
               for n, _, v in numbers)  # fmt: skip


@pytest.fixture()
def bridge(server, tmp_path):
    """``sitetune bridge`` as a user runs it, forwarding to the service."""
    port = free_port()
    env = dict(os.environ, SITETUNE_URL=server.base_url, SITETUNE_TOKEN=TOKENS["pacs"])
    log = (tmp_path / "bridge.log").open("w")
    cli = Path(sys.executable).parent / "sitetune"
    proc = subprocess.Popen(
        [str(cli), "bridge", "--port", str(port), "--host", "127.0.0.1", "--ae-title",
         "SITETUNE", "--spool", str(tmp_path / "spool"), "--idle-seconds", "5",
         "--allow", "ECHOSCU", "--allow", "DCMSEND"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    echo = shutil.which("echoscu")
    _wait("the bridge to listen", lambda: subprocess.run(
        [echo, "-aec", "SITETUNE", "127.0.0.1", str(port)], capture_output=True
    ).returncode == 0, timeout=60)  # fmt: skip
    yield port
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=20)


@pytest.mark.skipif(shutil.which("dcmsend") is None, reason="dcmtk is not installed")
@pytest.mark.parametrize("kind", ["cardiac", "flair"])
def test_dcmsend_through_the_bridge_results_come_back_by_c_store(
    server, orthanc, bridge, kind, cardiac, flair, tmp_path
):
    case = cardiac if kind == "cardiac" else flair
    files, study_uid = _write(case.image, tmp_path / "dcm", f"{kind} via dimse")
    sent = subprocess.run(
        ["dcmsend", "-aec", "SITETUNE", "127.0.0.1", str(bridge), "+sd", "+r",
         str(tmp_path / "dcm")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    found = _wait("SEG + SR C-STOREd into Orthanc", lambda: _results_in(orthanc, study_uid),
                  server=server)  # fmt: skip
    sources = {str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in files}
    _check_results(found, study_uid, sources, tmp_path)
    analysis = _analysis(server, study_uid)
    assert analysis["route"] == ("dimse-ct" if kind == "cardiac" else "dimse-flair")
    assert [d["destination"] for d in analysis["deliveries"]] == ["orthanc-dimse"]


@pytest.mark.skipif(shutil.which("echoscu") is None, reason="dcmtk is not installed")
def test_bridge_answers_echo_only_to_its_ae_title(bridge):
    ok = subprocess.run(["echoscu", "-aec", "SITETUNE", "127.0.0.1", str(bridge)],
                        capture_output=True)  # fmt: skip
    wrong = subprocess.run(["echoscu", "-aec", "SOMEONE", "127.0.0.1", str(bridge)],
                           capture_output=True)  # fmt: skip
    stranger = subprocess.run(["echoscu", "-aet", "STRANGER", "-aec", "SITETUNE", "127.0.0.1",
                               str(bridge)], capture_output=True)  # fmt: skip
    assert ok.returncode == 0
    assert wrong.returncode != 0, "an association called with another AE title is rejected"
    assert stranger.returncode != 0, "a calling AE title not --allow'ed is rejected"


def test_the_bridge_needs_its_callers_named(capsys):
    from sitetune.clients.cli import main

    assert main(["bridge", "--port", "0"]) == 2
    assert "--allow" in capsys.readouterr().err


# -- STOW-RS edge cases, straight to the service ----------------------------------------


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "b0undary") -> bytes:
    body = b""
    for content_type, data in parts:
        body += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def _stow(server, body: bytes, content_type: str | None = None, role: str = "pacs", **kwargs):
    content_type = content_type or STOW_TYPE
    with server.client(role) as client:
        return client.post(
            "/dicomweb/studies", content=body, headers={"Content-Type": content_type}, **kwargs
        )


def _truncated(path: Path) -> bytes:
    raw = path.read_bytes()
    return raw[: len(raw) - 2000]  # pixel data cut short; the header still names the instance


def test_stow_with_a_corrupt_part_is_202_listing_it_and_the_rest_is_analysed(
    server, orthanc, cardiac, tmp_path
):
    files, study_uid = _write(cardiac.image.phase(0), tmp_path / "ct", "heart, one phase")
    good, bad = files[:-1], files[-1]  # the last slice: the rest is still a whole stack
    body = _multipart([("application/dicom", p.read_bytes()) for p in good]
                      + [("application/dicom", _truncated(bad))])  # fmt: skip
    response = _stow(server, body)
    assert response.status_code == 202, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    answer = response.json()
    stored = [i["00081155"]["Value"][0] for i in answer["00081199"]["Value"]]
    assert sorted(stored) == sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in good)
    (failed,) = answer["00081198"]["Value"]
    assert failed["00081155"]["Value"][0] == str(pydicom.dcmread(bad).SOPInstanceUID)
    assert failed["00081197"]["Value"][0] == 0xC000

    found = _wait("SEG + SR in Orthanc", lambda: _results_in(orthanc, study_uid), server=server)
    assert len(found["SEG"]) == 1, "a single phase: one SEG"
    analysis = _analysis(server, study_uid)
    assert analysis["state"] == "done"
    assert analysis["summary"]["input"]["shape"][2] == len(good)


def test_stow_chunked_with_an_unquoted_boundary_is_accepted(server, cardiac, tmp_path):
    files = write_dicom_series(cardiac.image.phase(0), tmp_path / "one",
                               series_description="unrouted chunked")  # fmt: skip
    body = _multipart([("application/dicom", p.read_bytes()) for p in files[:2]], "xyz-123")

    def chunks():
        for start in range(0, len(body), 777):
            yield body[start : start + 777]

    response = _stow(
        server, chunks(), 'multipart/related; type="application/dicom"; boundary=xyz-123'
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["00081199"]["Value"]) == 2


def test_stow_refuses_non_dicom_parts_and_bodies(server, cardiac, tmp_path):
    files = write_dicom_series(cardiac.image.phase(0), tmp_path / "one",
                               series_description="unrouted refused")  # fmt: skip
    dicom = files[0].read_bytes()
    # a part declared as something else: 415, nothing stored
    mixed = _multipart([("application/dicom", dicom), ("text/plain", b"hello")])
    response = _stow(server, mixed)
    assert response.status_code == 415, response.text
    with server.client("pacs") as client:
        known = {s["series_uid"] for s in client.get("/v1/pacs/series").json()["series"]}
    assert str(pydicom.dcmread(files[0]).SeriesInstanceUID) not in known
    # parts that claim to be DICOM but are not: 409, each listed as failed
    junk = _multipart([("application/dicom", b"not dicom at all"), ("application/dicom", b"")])
    response = _stow(server, junk)
    assert response.status_code == 409, response.text
    assert len(response.json()["00081198"]["Value"]) == 2
    # the request itself is not multipart/related of application/dicom: 415
    assert _stow(server, dicom, "application/dicom").status_code == 415
    json_type = 'multipart/related; type="application/dicom+json"; boundary=b0undary'
    assert _stow(server, mixed, json_type).status_code == 415
    # no boundary, or a body cut before its closing boundary: 400
    assert _stow(server, mixed, 'multipart/related; type="application/dicom"').status_code == 400
    assert _stow(server, mixed[:-30]).status_code == 400


def test_stow_into_a_study_fails_instances_of_other_studies(server, cardiac, tmp_path):
    files = write_dicom_series(cardiac.image.phase(0), tmp_path / "one",
                               series_description="unrouted other study")  # fmt: skip
    body = _multipart([("application/dicom", files[0].read_bytes())])
    with server.client("pacs") as client:
        response = client.post(
            "/dicomweb/studies/1.2.3.4",
            content=body,
            headers={
                "Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'
            },
        )
    assert response.status_code == 409
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"][0] == 0xA900


def test_stow_needs_the_pacs_or_ops_role(server, cardiac, tmp_path):
    body = _multipart([("application/dicom", b"x")])
    assert _stow(server, body, role="clinical").status_code == 403
    with httpx.Client(base_url=server.base_url) as anonymous:
        assert anonymous.post("/dicomweb/studies", content=body).status_code == 401


def _pending_on_metrics(server) -> bool:
    text = httpx.get(f"{server.base_url}/metrics").text
    print([line for line in text.splitlines() if line.startswith("sitetune_pacs_rows")])
    for line in text.splitlines():
        pending = 'table="deliveries"' in line and 'state="pending"' in line
        if line.startswith("sitetune_pacs_rows{") and pending:
            return float(line.rsplit(" ", 1)[1]) >= 1
    return False


def test_a_down_destination_gets_its_delivery_once_back_even_across_a_worker_restart(
    server, cardiac, tmp_path
):
    files, study_uid = _write(cardiac.image, tmp_path / "ct", "retry heart")
    body = _multipart([("application/dicom", p.read_bytes()) for p in files])
    assert _stow(server, body).status_code == 200

    def failing_delivery():
        analyses = server.client("ops").get("/v1/pacs/analyses").json()["analyses"]
        mine = [a for a in analyses if a["study_uid"] == study_uid and a["state"] == "done"]
        if not mine:
            return None
        detail = server.client("ops").get(f"/v1/pacs/analyses/{mine[0]['id']}").json()
        (delivery,) = detail["deliveries"]
        # between two attempts ("sending" while one is in flight)
        return delivery if delivery["attempts"] >= 2 and delivery["state"] == "pending" else None

    delivery = _wait("failed delivery attempts", failing_delivery, server=server)
    assert delivery["state"] == "pending" and delivery["last_error"]
    _wait("the pending delivery on /metrics", lambda: _pending_on_metrics(server), timeout=90)

    # the PACS worker dies: its supervisor starts another, which carries on from the database
    analysis = server.client("ops").get(f"/v1/pacs/analyses/{delivery['analysis_id']}").json()
    os.kill(int(analysis["worker"].rpartition(":")[2]), signal.SIGKILL)
    attempts_then = delivery["attempts"]

    def attempted_again():
        detail = server.client("ops").get(f"/v1/pacs/analyses/{analysis['id']}").json()
        return detail["deliveries"][0]["attempts"] >= attempts_then + 2

    _wait("attempts by the restarted PACS worker", attempted_again, timeout=60, server=server)

    later = Orthanc(tmp_path / f"later-{uuid.uuid4().hex[:6]}", aet="LATER",
                    http_port=ORTHANC_PORTS["later_http"]).start()  # fmt: skip
    try:
        found = _wait("the SEG + SR in the destination once it is up",
                      lambda: _results_in(later, study_uid), server=server)  # fmt: skip
        assert len(found["SEG"]) == 2
        detail = server.client("ops").get(f"/v1/pacs/analyses/{delivery['analysis_id']}").json()
        (done,) = detail["deliveries"]
        assert done["state"] == "delivered" and done["attempts"] >= attempts_then + 3
    finally:
        later.stop()


def test_a_destination_refusing_the_seg_class_fails_alone_and_delays_nothing(
    server, orthanc, tmp_path
):
    """A PACS that does not accept Segmentation Storage: the SR still reaches it, its
    delivery ends ``failed`` with the reason at once (no retry can cure it), and the other
    destination of the route gets SEG + SR as usual."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import Comprehensive3DSRStorage

    received = []

    def on_store(event):
        received.append(event.dataset.SOPClassUID)
        return 0x0000

    scp = AE(ae_title="NOSEG")
    scp.add_supported_context(Comprehensive3DSRStorage)  # no SEG
    server_scp = scp.start_server(
        ("127.0.0.1", NO_SEG_PORT), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        case = cardiac_phantom(33, "A", phases=1, spacing=(2.5, 2.5, 3.5))
        files, study_uid = _write(case.image, tmp_path / "ct", "refused seg heart")
        response = _stow(server, _multipart([("application/dicom", f.read_bytes()) for f in files]))
        assert response.status_code == 200, response.text
        found = _wait("SEG + SR in Orthanc", lambda: _results_in(orthanc, study_uid), server=server)
        assert len(found["SEG"]) == 1 and len(found["SR"]) == 1

        def settled():
            deliveries = _analysis(server, study_uid)["deliveries"]
            return (
                deliveries
                if all(d["state"] in ("delivered", "failed") for d in deliveries)
                else None
            )

        deliveries = {d["destination"]: d for d in _wait("deliveries to settle", settled)}
        assert deliveries["orthanc-web"]["state"] == "delivered"
        refused = deliveries["no-seg"]
        assert refused["state"] == "failed" and refused["attempts"] == 1
        assert "does not accept Segmentation Storage" in refused["last_error"]
        assert received == [Comprehensive3DSRStorage]
    finally:
        server_scp.shutdown()


def test_the_same_series_over_http_and_stow_gives_the_same_outputs(server, orthanc, tmp_path):
    """One pipeline: the mask, the measurement, the provenance and the SEG's segments are
    the same whether a series comes over HTTP or from the PACS."""
    case = cardiac_phantom(21, "A", phases=2, spacing=(2.5, 2.5, 3.5))
    files, study_uid = _write(case.image, tmp_path / "ct", "heart same")
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in files:
            z.write(f, f.name)
    with server.client("clinical") as client:
        http = client.post("/v1/thickness", files={"file": ("s.zip", archive.read_bytes())})
        assert http.status_code == 200, http.text
        http = http.json()
        seg = client.get(f"/v1/results/{http['result_id']}/seg", params={"phase": "ed"})
        http_seg = pydicom.dcmread(io.BytesIO(seg.content))
        sr = client.get(f"/v1/results/{http['result_id']}/sr")
        assert sr.status_code == 200, sr.text
        http_sr = pydicom.dcmread(io.BytesIO(sr.content))
    response = _stow(server, _multipart([("application/dicom", f.read_bytes()) for f in files]))
    assert response.status_code == 200, response.text

    def done():
        with server.client("ops") as ops:
            analyses = ops.get("/v1/pacs/analyses").json()["analyses"]
        found = [a for a in analyses if a["study_uid"] == study_uid]
        return found[0] if found and found[0]["state"] in ("done", "failed") else None

    analysis = _wait("the PACS analysis", done, server=server)
    assert analysis["state"] == "done", analysis
    pacs = analysis["summary"]

    def what(provenance: dict) -> dict:  # what produced it; the timings differ by run
        return {k: v for k, v in provenance.items() if k != "timings_ms"}

    assert what(pacs["provenance"]) == what(http["provenance"])
    assert pacs["provenance"]["engine"] == "onnxruntime"
    assert set(pacs["provenance"]["timings_ms"]) >= {"infer", "thickness"}
    assert pacs["provenance"]["model"]["card_sha256"] and pacs["provenance"]["input_sha256"]
    assert pacs["thickness"]["phases"] == http["phases"]
    with server.client("pacs") as client:
        raw = client.get(f"/v1/pacs/analyses/{analysis['id']}/files/seg-ed.dcm").content
        raw_sr = client.get(f"/v1/pacs/analyses/{analysis['id']}/files/report-sr.dcm").content
    pacs_seg = pydicom.dcmread(io.BytesIO(raw))
    pacs_sr = pydicom.dcmread(io.BytesIO(raw_sr))
    assert _numbers(pacs_sr) == _numbers(http_sr) and _numbers(http_sr), "the same SR numbers"
    assert list(pacs_sr.SoftwareVersions) == list(http_sr.SoftwareVersions)
    assert np.array_equal(pacs_seg.pixel_array, http_seg.pixel_array)
    assert list(pacs_seg.SoftwareVersions) == list(http_seg.SoftwareVersions)
    assert any("card sha256" in v for v in http_seg.SoftwareVersions)
