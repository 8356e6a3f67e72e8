"""/v1/segment and results through a real `bentoml serve` with two workers."""

from __future__ import annotations

import gzip
import zipfile
from concurrent.futures import ThreadPoolExecutor

import nibabel as nib
import numpy as np
import pytest

from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.nifti import save_nifti
from sitetune.imaging.phantoms.acquisition import random_rotation
from sitetune.imaging.phantoms.cardiac import cardiac_phantom
from sitetune.measure.metrics import dice
from tests.conftest import dciodvfy_errors
from tests.server import MAX_UPLOAD_BYTES


@pytest.fixture(scope="module")
def oblique_case():
    return cardiac_phantom(
        301,
        "A",
        grid_rotation=random_rotation(np.random.default_rng(5), 20),
        spacing=(1.2, 1.2, 1.6),
    )


@pytest.fixture(scope="module")
def nifti_upload(oblique_case, tmp_path_factory):
    path = tmp_path_factory.mktemp("upload") / "case.nii.gz"
    save_nifti(oblique_case.image.array.astype(np.int16), path, affine=oblique_case.image.affine)
    return path


def _post_segment(client, path, **fields):
    with path.open("rb") as f:
        return client.post("/v1/segment", files={"file": (path.name, f)}, data=fields)


def test_nifti_in_json_and_mask_on_the_input_grid(server, oblique_case, nifti_upload):
    with server.client("clinical") as client:
        response = _post_segment(client, nifti_upload, model="lv-ct")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"]["name"] == "lv-ct" and body["model"]["version"]
        assert body["backend"].startswith(("torch:", "onnxruntime:"))
        assert body["input"]["shape"] == list(oblique_case.image.shape)
        assert set(body["labels"]) == {"LV blood pool", "LV myocardium"}
        assert {"load", "preprocess", "infer", "postprocess", "total"} <= set(body["timings_ms"])
        mask_response = client.get(f"/v1/results/{body['result_id']}/mask")
        assert mask_response.status_code == 200
        assert mask_response.headers["content-type"] == "application/gzip"
        image = client.get(f"/v1/results/{body['result_id']}/image")  # the upload, as it came
        assert image.status_code == 200 and image.content == nifti_upload.read_bytes()
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(mask_response.content))
    assert mask.shape == oblique_case.image.shape
    np.testing.assert_allclose(mask.affine, oblique_case.image.affine, atol=1e-4)
    labels = np.asarray(mask.dataobj)
    truth = oblique_case.labels.array
    assert dice(labels == 1, truth == 1) > 0.85  # the built-in model works through HTTP
    expected_ml = float((labels == 1).sum() * oblique_case.image.voxel_volume_ml)
    assert body["labels"]["LV blood pool"]["volume_ml"] == pytest.approx(expected_ml, abs=0.01)
    with server.client() as client:
        metrics = client.get("/metrics").text
    stage_lines = [
        line
        for line in metrics.splitlines()
        if line.startswith("sitetune_inference_stage_seconds_count")
    ]
    assert any(
        'model="lv-ct"' in line
        and 'stage="infer"' in line
        and f'backend="{body["backend"]}"' in line
        for line in stage_lines
    )


def test_dicom_zip_in_gives_a_valid_seg(server, oblique_case, tmp_path):
    write_dicom_series(oblique_case.image, tmp_path / "dcm")
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted((tmp_path / "dcm").iterdir()):
            z.write(p, f"series/{p.name}")
    with server.client("clinical") as client:
        body = _post_segment(client, archive).json()  # modality CT picks lv-ct
        assert body["model"]["name"] == "lv-ct" and body["input"]["format"] == "dicom"
        seg = client.get(f"/v1/results/{body['result_id']}/seg")
        assert seg.status_code == 200 and seg.headers["content-type"] == "application/dicom"
        image = client.get(f"/v1/results/{body['result_id']}/image")
        mask = client.get(f"/v1/results/{body['result_id']}/mask")
    # the viewer's image: the decoded series on the mask's grid, in HU, stored as int16
    shown = nib.Nifti1Image.from_bytes(gzip.decompress(image.content))
    labels = nib.Nifti1Image.from_bytes(gzip.decompress(mask.content))
    assert shown.shape == labels.shape == oblique_case.image.shape
    np.testing.assert_allclose(shown.affine, labels.affine, atol=1e-4)
    assert shown.get_data_dtype() == np.int16
    np.testing.assert_allclose(np.asarray(shown.dataobj), oblique_case.image.array, atol=1)
    (tmp_path / "seg.dcm").write_bytes(seg.content)
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []


def test_authentication_and_roles(server, nifti_upload):
    with server.client() as anonymous:
        response = _post_segment(anonymous, nifti_upload, model="lv-ct")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "missing_token"
    with server.client() as client:
        client.headers["Authorization"] = "Bearer wrong"
        assert client.get("/v1/models").json()["error"]["code"] == "invalid_token"
    with server.client("pacs") as pacs:
        response = _post_segment(pacs, nifti_upload, model="lv-ct")
        assert response.status_code == 403 and response.json()["error"]["code"] == "wrong_role"
    with server.client("clinical") as clinical:
        assert clinical.get("/v1/models").status_code == 403
    with server.client("ops") as ops:
        assert ops.get("/v1/models").status_code == 200


def test_bad_uploads_get_4xx_json_and_the_service_stays_healthy(server, tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(np.random.default_rng(0).bytes(10_000))
    big = tmp_path / "big.nii.gz"
    big.write_bytes(b"\x1f\x8b" + bytes(MAX_UPLOAD_BYTES + 1024))
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.dcm", bytes(64 << 20))
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../x.dcm", b"x")
    with server.client("clinical") as client:
        cases = [
            (junk, 415, "unsupported_input"),
            (big, 413, "payload_too_large"),
            (bomb, 413, "payload_too_large"),
            (evil, 400, "unsafe_archive"),
        ]
        for path, status, code in cases:
            response = _post_segment(client, path)
            assert response.status_code == status, (path.name, response.text)
            assert response.json()["error"]["code"] == code
        response = client.post("/v1/segment", data={"model": "lv-ct"})
        assert response.status_code == 400 and response.json()["error"]["code"] == "missing_file"
        ok = tmp_path / "x.nii.gz"  # NIfTI carries no modality, so a model must be named
        save_nifti(np.zeros((8, 8, 8), np.int16), ok, affine=np.eye(4))
        response = _post_segment(client, ok)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "model_required"
        assert client.get("/v1/results/nope/mask").status_code == 404
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


def test_registered_and_promoted_version_serves_from_every_worker(server, tmp_path):
    small = cardiac_phantom(302, "A", spacing=(2.5, 2.5, 2.5))
    upload = tmp_path / "small.nii.gz"
    save_nifti(small.image.array.astype(np.int16), upload, affine=small.image.affine)
    with server.client("ops") as ops:
        production = ops.get("/v1/models/lv-ct").json()["aliases"]["production"]
        registered = server.register_production_copy(ops, "lv-ct")
        assert registered.status_code == 201, registered.text
        new_version = registered.json()["version"]
        promoted = ops.post(
            "/v1/models/lv-ct/promote", json={"version": new_version, "reason": "integration test"}
        )
        assert promoted.status_code == 200 and promoted.json()["to_version"] == new_version

        def one(_):
            response = _post_segment(ops, upload, model="lv-ct")
            return response.headers["X-Sitetune-Worker"], response.json()["model"]["version"]

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(one, range(12)))
        assert len({worker for worker, _ in answers}) == 2  # both workers answered...
        assert {version for _, version in answers} == {str(new_version)}  # ...with the new one
        rolled = ops.post("/v1/models/lv-ct/rollback", json={"reason": "undo test"}).json()
        assert rolled["to_version"] == production
        after = _post_segment(ops, upload, model="lv-ct").json()
        assert after["model"]["version"] == str(production)
        audit = ops.get("/v1/audit", params={"model": "lv-ct"}).json()["entries"]
        assert [e["action"] for e in audit[:2]] == ["rollback", "promote"]
