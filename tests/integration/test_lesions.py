"""/v1/lesion-volume through a real `bentoml serve`: masks, FLAIR images, errors."""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
import pydicom
import pytest

from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.nifti import save_nifti
from sitetune.imaging.phantoms.brain import brain_phantom
from sitetune.imaging.volume import LPS_TO_RAS
from sitetune.measure.lesions import lesion_statistics
from tests.conftest import dciodvfy_errors, zip_tree

ANISOTROPIC = np.array(
    [[0.0, -0.8, 0.0, 90.0], [0.9, 0.0, 0.0, -110.0], [0.0, 0.0, 3.3, -40.5], [0, 0, 0, 1]]
)


@pytest.fixture(scope="module")
def flair_case():
    """A site-A FLAIR phantom with several lesions."""
    return brain_phantom(21, "A", n_lesions=8)


def _post(client, field, path, **fields):
    with path.open("rb") as f:
        return client.post("/v1/lesion-volume", files={field: (path.name, f)}, data=fields)


def _nifti(response) -> nib.Nifti1Image:
    assert response.status_code == 200, response.text
    return nib.Nifti1Image.from_bytes(gzip.decompress(response.content))


def test_mask_in_gives_the_exact_count_volumes_and_lesion_map(server, tmp_path):
    mask = np.zeros((40, 30, 12), dtype=np.uint8)
    mask[5:15, 5:10, 2:5] = 1  # 150 voxels
    mask[30:33, 20:24, 8] = 1  # 12 voxels
    mask[39, 29, 11] = 1  # 1 voxel at the corner: below the default 0.015 mL
    path = tmp_path / "lesions.nii.gz"
    save_nifti(mask, path, affine=ANISOTROPIC)
    # exact for the grid the file holds (NIfTI stores the affine in float32)
    voxel_ml = abs(np.linalg.det(ANISOTROPIC.astype(np.float32)[:3, :3].astype(float))) / 1000
    with server.client("clinical") as client:
        response = _post(client, "mask", path)
        assert response.status_code == 200, response.text
        body = response.json()
        lesion_map = _nifti(client.get(f"/v1/results/{body['result_id']}/lesions"))
        returned_mask = _nifti(client.get(f"/v1/results/{body['result_id']}/mask"))
    assert body["model"] is None and body["count"] == 2
    assert (body["min_lesion_ml"], body["connectivity"]) == (0.015, 26)
    assert abs(body["total_ml"] - 162 * voxel_ml) < 1e-9
    assert [lesion["voxels"] for lesion in body["lesions"]] == [150, 12]
    assert abs(body["lesions"][0]["volume_ml"] - 150 * voxel_ml) < 1e-9
    assert abs(body["lesions"][1]["volume_ml"] - 12 * voxel_ml) < 1e-9
    assert body["below_min"] == {"count": 1, "volume_ml": pytest.approx(voxel_ml, abs=1e-9)}
    assert body["lesions"][0]["bbox_vox"] == [[5, 5, 2], [14, 9, 4]]
    centre = ANISOTROPIC @ np.array([9.5, 7.0, 3.0, 1.0])
    np.testing.assert_allclose(body["lesions"][0]["centroid_mm"], centre[:3], atol=1e-4)
    assert body["centroid_frame"] == "RAS"
    ids = np.asarray(lesion_map.dataobj)
    np.testing.assert_allclose(lesion_map.affine, ANISOTROPIC, atol=1e-5)
    assert (ids == 1).sum() == 150 and (ids == 2).sum() == 12 and ids[39, 29, 11] == 0
    assert np.array_equal(np.asarray(returned_mask.dataobj), mask)


def test_mask_options_connectivity_and_minimum(server, tmp_path):
    mask = np.zeros((10, 10, 10), dtype=np.uint8)
    mask[2:4, 2:4, 2:4] = 1
    mask[4, 4, 4] = 1  # touches the cube at a corner only
    path = tmp_path / "touching.nii.gz"
    save_nifti(mask, path, affine=np.eye(4))
    with server.client("clinical") as client:
        joined = _post(client, "mask", path, min_lesion_ml="0").json()
        split = _post(client, "mask", path, min_lesion_ml="0", connectivity="6").json()
        bad = _post(client, "mask", path, connectivity="8")
    assert joined["count"] == 1 and split["count"] == 2
    assert split["connectivity"] == 6 and split["lesions"][1]["voxels"] == 1
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_connectivity"


def test_all_zero_mask_is_count_zero_not_an_error(server, tmp_path):
    path = tmp_path / "empty.nii.gz"
    save_nifti(np.zeros((16, 16, 8), dtype=np.float32), path, affine=ANISOTROPIC)
    with server.client("clinical") as client:
        response = _post(client, "mask", path)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["count"], body["total_ml"], body["lesions"]) == (0, 0.0, [])


def test_unexpected_labels_and_4d_masks_are_422(server, tmp_path):
    labels = np.zeros((8, 8, 8), dtype=np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    labels[5, 5, 5] = 2
    labels[6, 6, 6] = 7
    save_nifti(labels, tmp_path / "labels.nii.gz", affine=np.eye(4))
    save_nifti(np.zeros((8, 8, 8, 3), np.uint8), tmp_path / "cine.nii.gz", affine=np.eye(4))
    with server.client("clinical") as client:
        wrong = _post(client, "mask", tmp_path / "labels.nii.gz")
        four_d = _post(client, "mask", tmp_path / "cine.nii.gz")
    assert wrong.status_code == 422
    error = wrong.json()["error"]
    assert error["code"] == "unexpected_labels" and "[2, 7]" in error["message"]
    assert four_d.status_code == 422 and four_d.json()["error"]["code"] == "not_3d"


def test_nifti_flair_in_is_segmented_and_measured_with_the_model_version(
    server, flair_case, tmp_path
):
    path = tmp_path / "flair.nii.gz"
    save_nifti(flair_case.image.array.astype(np.int16), path, affine=flair_case.image.affine)
    with server.client("clinical") as client:
        response = _post(client, "file", path)
        assert response.status_code == 200, response.text
        body = response.json()
        predicted = _nifti(client.get(f"/v1/results/{body['result_id']}/mask"))
    assert body["model"]["name"] == "flair-lesion" and body["model"]["version"]
    assert body["backend"].startswith("onnxruntime")
    assert body["count"] >= 1 and body["timings_ms"]["lesions"] >= 0
    # the JSON describes the returned mask, measured the same way
    again = lesion_statistics(np.asarray(predicted.dataobj) == 1, predicted.affine)
    assert body["count"] == again.count
    assert body["total_ml"] == pytest.approx(again.total_ml, abs=1e-9)
    truth = flair_case.truth["lesion_volume_ml"]
    assert body["total_ml"] == pytest.approx(truth, rel=0.5)  # the base model at its own site


def test_dicom_flair_in_gives_lps_centroids_and_a_lesion_seg(server, flair_case, tmp_path):
    write_dicom_series(flair_case.image, tmp_path / "dcm")
    archive = zip_tree(tmp_path / "dcm", tmp_path / "flair.zip", prefix="dcm/")
    with server.client("clinical") as client:
        response = _post(client, "file", archive)
        assert response.status_code == 200, response.text
        body = response.json()
        predicted = _nifti(client.get(f"/v1/results/{body['result_id']}/mask"))
        seg = client.get(f"/v1/results/{body['result_id']}/seg")
    assert body["input"]["format"] == "dicom" and body["centroid_frame"] == "LPS"
    in_lps = lesion_statistics(np.asarray(predicted.dataobj) == 1, LPS_TO_RAS @ predicted.affine)
    assert body["count"] == in_lps.count >= 1
    np.testing.assert_allclose(
        body["lesions"][0]["centroid_mm"], in_lps.lesions[0].centroid_mm, atol=1e-3
    )
    assert seg.status_code == 200
    dataset = pydicom.dcmread(io.BytesIO(seg.content))
    (segment,) = dataset.SegmentSequence
    assert segment.SegmentLabel == "lesion"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Lesion"
    assert (
        segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion
        == (body["model"]["version"])
    )
    (tmp_path / "seg.dcm").write_bytes(seg.content)
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []
