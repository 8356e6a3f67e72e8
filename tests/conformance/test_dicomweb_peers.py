"""DICOMweb peers we did not write: dicomweb-client (the Python DICOMweb library) stores a
study with us and reads a conformant answer; Orthanc sends a series lacking Type 2
attributes (as anonymised exports do) and gets the SEG and SR back in the same study,
and the series' state follows its analysis."""

from __future__ import annotations

import pydicom
import pytest

from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.phantoms.cardiac import cardiac_phantom
from tests.conformance import judges
from tests.conformance.variants import VARIANTS
from tests.integration.test_pacs import _analysis, _multipart, _results_in, _stow, _wait
from tests.server import TOKENS

pytestmark = pytest.mark.slow
TYPE2_MISSING = next(v for v in VARIANTS if v.name == "type2_missing")


@pytest.fixture(scope="module")
def cardiac_series(tmp_path_factory):
    case = cardiac_phantom(8, "A", phases=1, spacing=(2.5, 2.5, 3.5))
    root = tmp_path_factory.mktemp("peers")
    files = write_dicom_series(case.image, root / "written", series_description="heart")
    return sorted(TYPE2_MISSING.write(files, root / "type2").iterdir())


def test_dicomweb_client_stores_a_study_and_gets_one_reference_per_instance(server, tmp_path):
    client_module = pytest.importorskip("dicomweb_client.api", reason="PyPI dicomweb-client")
    case = cardiac_phantom(9, "A", phases=1, spacing=(2.5, 2.5, 3.5))
    files = write_dicom_series(case.image, tmp_path, series_description="research export")
    datasets = [pydicom.dcmread(f) for f in files]
    client = client_module.DICOMwebClient(
        url=f"{server.base_url}/dicomweb",
        headers={"Authorization": f"Bearer {TOKENS['pacs']}"},
    )
    answer = client.store_instances(datasets=datasets)
    stored = {item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence}
    assert stored == {ds.SOPInstanceUID for ds in datasets}
    assert "FailedSOPSequence" not in answer or len(answer.FailedSOPSequence) == 0
    for item in answer.ReferencedSOPSequence:
        assert item.ReferencedSOPClassUID == datasets[0].SOPClassUID


def test_orthanc_sends_a_series_with_type2_gaps_and_gets_seg_and_sr_back(
    server, orthanc, cardiac_series, tmp_path
):
    study_uid = str(pydicom.dcmread(cardiac_series[0], stop_before_pixels=True).StudyInstanceUID)
    assert "PatientBirthDate" not in pydicom.dcmread(cardiac_series[0], stop_before_pixels=True)
    with orthanc.client() as c:
        sent = c.post(
            "/dicom-web/servers/sitetune/stow",
            json={"Resources": [orthanc.upload(cardiac_series)]},
        )
    assert sent.status_code == 200, sent.text
    found = _wait("SEG + SR in Orthanc", lambda: _results_in(orthanc, study_uid), server=server)
    assert len(found["SEG"]) == 1 and len(found["SR"]) == 1  # 3D: the ED SEG only
    for ds in [*found["SEG"], *found["SR"]]:
        assert ds.StudyInstanceUID == study_uid
        assert ds.PatientBirthDate == "" and ds.PatientSex == "" and ds.AccessionNumber == ""
        path = tmp_path / f"{ds.Modality}.dcm"
        ds.save_as(path)
        if judges.tool("dciodvfy"):
            assert judges.dciodvfy_errors(path) == []
    analysis = _analysis(server, study_uid)
    assert analysis["state"] == "done", analysis
    assert analysis["summary"]["outputs"]["unavailable"] == {}
    with server.client("pacs") as pacs:
        series = [s for s in pacs.get("/v1/pacs/series").json()["series"]
                  if s["study_uid"] == study_uid]  # fmt: skip
    assert [s["state"] for s in series] == ["analysed"]


def test_a_series_whose_analysis_fails_is_shown_failed_with_the_reason(server, tmp_path):
    """A localizer series routed to the cardiac model: refused before inference; the
    analysis ends failed with that reason and the series says so (not ``queued``)."""
    localizer = next(v for v in VARIANTS if v.name == "localizer_only")
    case = cardiac_phantom(10, "A", phases=1, spacing=(2.5, 2.5, 3.5))
    written = write_dicom_series(case.image, tmp_path / "w", series_description="heart scout")
    files = sorted(localizer.write(written, tmp_path / "scout").iterdir())
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    response = _stow(server, _multipart([("application/dicom", f.read_bytes()) for f in files]))
    assert response.status_code == 200, response.text

    def finished():
        analysis = _analysis_or_none(server, study_uid)
        return analysis if analysis and analysis["state"] in ("done", "failed") else None

    analysis = _wait("the analysis to finish", finished, server=server)
    assert analysis["state"] == "failed" and "localizer" in analysis["error"]
    with server.client("pacs") as pacs:
        series = [s for s in pacs.get("/v1/pacs/series").json()["series"]
                  if s["study_uid"] == study_uid]  # fmt: skip
    assert [s["state"] for s in series] == ["failed"]


def _analysis_or_none(server, study_uid: str) -> dict | None:
    with server.client("ops") as ops:
        found = [a for a in ops.get("/v1/pacs/analyses").json()["analyses"]
                 if a["study_uid"] == study_uid]  # fmt: skip
        return ops.get(f"/v1/pacs/analyses/{found[0]['id']}").json() if found else None
