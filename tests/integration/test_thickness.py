"""/v1/thickness through a real `bentoml serve`: masks, 4D images, ED/ES, errors."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.nifti import save_nifti
from sitetune.imaging.phantoms.cardiac import cardiac_phantom
from sitetune.measure.ventricle import measure_ventricle
from tests.conftest import zip_tree


@pytest.fixture(scope="module")
def cine_case():
    """Five phases (0, 20, 40, 60, 80 % of R-R; ES at 40 %) at 1.5 mm."""
    return cardiac_phantom(412, "A", phases=5, spacing=(1.5, 1.5, 1.5))


def _post(client, **uploads_and_fields):
    files = {k: v for k, v in uploads_and_fields.items() if k in ("file", "mask")}
    data = {k: v for k, v in uploads_and_fields.items() if k not in files}
    opened = {k: (p.name, p.open("rb")) for k, p in files.items()}
    try:
        return client.post("/v1/thickness", files=opened, data=data)
    finally:
        for _, f in opened.values():
            f.close()


def test_mask_in_stats_and_map_equal_the_direct_measurement(server, cine_case, tmp_path):
    ed_labels = cine_case.labels.phase(0)
    path = tmp_path / "mask.nii.gz"
    save_nifti(ed_labels.array.astype(np.float32), path, affine=ed_labels.affine)  # float mask
    direct = measure_ventricle(ed_labels.array, ed_labels.affine)
    with server.client("clinical") as client:
        response = _post(client, mask=path)
        assert response.status_code == 200, response.text
        body = response.json()
        map_response = client.get(f"/v1/results/{body['result_id']}/thickness")
    assert body["model"] is None and len(body["phases"]) == 1
    assert body["phases"][0]["thickness_mm"] == direct.to_json()["phases"][0]["thickness_mm"]
    assert body["method"]["name"] == "laplace-yezzi"
    assert body["method"]["surfaces"] == "fitted"  # the default placement
    thickness = nib.Nifti1Image.from_bytes(gzip.decompress(map_response.content))
    np.testing.assert_allclose(thickness.affine, ed_labels.affine, atol=1e-4)
    np.testing.assert_allclose(np.asarray(thickness.dataobj), direct.thickness_map, atol=1e-5)
    wall = ed_labels.array == 2
    assert np.all(np.asarray(thickness.dataobj)[~wall] == 0)


def test_surface_placement_can_be_chosen_and_a_bad_choice_is_400(server, cine_case, tmp_path):
    ed_labels = cine_case.labels.phase(0)
    path = tmp_path / "mask.nii.gz"
    save_nifti(ed_labels.array.astype(np.uint8), path, affine=ed_labels.affine)
    direct = measure_ventricle(ed_labels.array, ed_labels.affine, surfaces="smoothed")
    with server.client("clinical") as client:
        smoothed = _post(client, mask=path, surfaces="smoothed")
        bad = _post(client, mask=path, surfaces="exact")
    assert smoothed.status_code == 200, smoothed.text
    assert smoothed.json()["method"]["surfaces"] == "smoothed"
    assert (
        smoothed.json()["phases"][0]["thickness_mm"]
        == direct.to_json()["phases"][0]["thickness_mm"]
    )
    assert bad.status_code == 400
    assert "surfaces" in bad.json()["error"]["message"]
    assert "smoothed" in bad.json()["error"]["message"]


def test_4d_dicom_study_ed_from_tags_es_from_volume_curve(server, cine_case, tmp_path):
    write_dicom_series(cine_case.image, tmp_path / "dcm")
    archive = zip_tree(tmp_path / "dcm", tmp_path / "study.zip", prefix="dcm/")
    with server.client("clinical") as client:
        response = _post(client, file=archive)
        assert response.status_code == 200, response.text
        body = response.json()
        seg = client.get(f"/v1/results/{body['result_id']}/seg")
    assert body["model"]["name"] == "lv-ct"
    assert body["ed"]["index"] == cine_case.ed_phase == 0
    assert body["es"]["index"] == cine_case.es_phase == 2
    assert body["method"]["ed_source"] == "dicom:nominal_percentage_of_cardiac_phase"
    assert body["method"]["es_source"] == "blood_pool_volume_min"
    assert [p["role"] for p in body["phases"]] == ["ED", None, "ES", None, None]
    assert body["thickening_pct"] > 10  # the phantom's wall thickens in systole
    truth = measure_ventricle(cine_case.labels.array, cine_case.labels.affine).to_json()
    for role in ("ed", "es"):
        assert body[role]["thickness_mm"]["median"] == pytest.approx(
            truth[role]["thickness_mm"]["median"], rel=0.15
        )
    assert seg.status_code == 200


def test_4d_nifti_uses_the_volume_curve_and_honours_requests(server, cine_case, tmp_path):
    path = tmp_path / "cine.nii.gz"
    save_nifti(cine_case.image.array.astype(np.int16), path, affine=cine_case.image.affine)
    with server.client("clinical") as client:
        body = _post(client, file=path).json()
        pinned = _post(client, file=path, ed="1", es="3").json()
    assert (body["ed"]["index"], body["es"]["index"]) == (0, 2)
    assert body["method"]["ed_source"] == "blood_pool_volume_max"
    assert (pinned["ed"]["index"], pinned["es"]["index"]) == (1, 3)
    assert pinned["method"]["ed_source"] == "request"


def test_bad_masks_are_422_naming_the_problem(server, cine_case, tmp_path):
    labels = cine_case.labels.phase(0)
    cases = {
        "no_myocardium": np.where(labels.array == 2, 0, labels.array),
        "no_blood_pool": np.where(labels.array == 1, 0, labels.array),
        "unexpected_labels": np.where(labels.array == 2, 5, labels.array),
    }
    with server.client("clinical") as client:
        for code, array in cases.items():
            path = tmp_path / f"{code}.nii.gz"
            save_nifti(array.astype(np.uint8), path, affine=labels.affine)
            response = _post(client, mask=path)
            assert response.status_code == 422, (code, response.text)
            assert response.json()["error"]["code"] == code
        both = _post(client, mask=path, file=path)
        assert both.status_code == 400
        assert client.get("/healthz").status_code == 200
    assert "[5]" in response.json()["error"]["message"]


def test_aha_segments_segment_map_and_bullseye_plots(server, cine_case, tmp_path):
    """A 4D image: 17 segments with ED and ES statistics, the segment map on the input grid,
    the bullseye as PNG (17 filled sectors) and SVG, and thickening."""
    import io

    from matplotlib import image

    from sitetune.analysis.bullseye import draw_bullseye

    path = tmp_path / "cine.nii.gz"
    save_nifti(cine_case.image, path)
    with server.client("clinical") as client:
        response = _post(client, file=path)
        assert response.status_code == 200, response.text
        body = response.json()
        base = f"/v1/results/{body['result_id']}"
        png = client.get(f"{base}/bullseye.png")
        es = client.get(f"{base}/bullseye.png", params={"phase": "es"})
        thickening = client.get(f"{base}/bullseye.svg", params={"value": "thickening"})
        segment_map = client.get(f"{base}/segments")
        bad = client.get(f"{base}/bullseye.gif")
    segments = body["segments"]
    assert [s["id"] for s in segments] == list(range(1, 18))
    assert segments[0]["name"] == "basal anterior" and segments[16]["name"] == "apex"
    assert all(s["ed"] and s["es"] and s["thickening_pct"] is not None for s in segments)
    assert body["axis"]["long_axis"] and body["axis"]["method"]
    assert body["outputs"]["bullseye"]["available"] and body["outputs"]["segments"]["available"]
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    picture = image.imread(io.BytesIO(png.content))[..., :3]
    _, pixels = draw_bullseye({s: 1.0 for s in range(1, 18)}, title="layout")  # the same layout
    for segment, (x, y) in pixels.items():
        patch = picture[int(y) + 6 : int(y) + 9, int(x) - 14 : int(x) - 11]
        assert not np.allclose(patch, 1.0), f"segment {segment} is filled"
    assert es.status_code == 200 and es.content != png.content
    assert thickening.status_code == 200 and b"<svg" in thickening.content
    assert bad.status_code == 400 and bad.json()["error"]["code"], "png or svg only"
    segment_image = nib.Nifti1Image.from_bytes(gzip.decompress(segment_map.content))
    values = np.asarray(segment_image.dataobj)
    assert values.shape == cine_case.image.array.shape
    assert set(np.unique(values)) <= set(range(18)) and len(np.unique(values)) == 18
