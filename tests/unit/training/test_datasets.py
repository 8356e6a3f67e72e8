"""Site datasets: MSD zips validated against the base model's card, every problem listed."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sitetune.errors import PayloadTooLarge, UnsafeArchive
from sitetune.imaging.archive import ZipLimits
from sitetune.imaging.nifti import save_nifti
from sitetune.imaging.phantoms.dataset import DatasetSpec, write_msd_dataset
from sitetune.models.builtin import load_builtin
from sitetune.training.datasets import InvalidDataset, open_site_dataset
from tests.conftest import zip_tree

AFFINE = np.diag([1.2, 1.2, 2.5, 1.0])


@pytest.fixture(scope="module")
def lv_card():
    return load_builtin("lv-ct")[0]


@pytest.fixture(scope="module")
def flair_card():
    return load_builtin("flair-lesion")[0]


def _case(folder: Path, name: str, labels: np.ndarray, label_affine=AFFINE, image_shape=None):
    image = np.random.default_rng(0).normal(size=image_shape or labels.shape).astype(np.float32)
    save_nifti(image, folder / "imagesTr" / f"{name}.nii.gz", affine=AFFINE)
    save_nifti(labels.astype(np.uint8), folder / "labelsTr" / f"{name}.nii.gz", affine=label_affine)
    return {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}


def _labels(shape=(12, 12, 8), values=(1, 2)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    for i, value in enumerate(values):
        labels[2 + 3 * i : 4 + 3 * i, 3:6, 2:5, ...] = value
    return labels


def _write(folder: Path, entries: list, **description) -> None:
    meta = {
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "LV blood pool", "2": "LV myocardium"},
        "training": entries,
    }
    meta.update(description)
    (folder / "dataset.json").write_text(json.dumps(meta))


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "ds"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    return folder


def test_valid_dataset_opens_with_cases_and_a_stable_fingerprint(tmp_path, lv_card):
    folder = _folder(tmp_path)
    _write(folder, [_case(folder, f"c{i}", _labels()) for i in range(3)])
    archive = zip_tree(folder, tmp_path / "ds.zip", prefix="mysite/")  # a zipped folder
    first = open_site_dataset(archive, tmp_path / "x1", lv_card)
    second = open_site_dataset(archive, tmp_path / "x2", lv_card)
    assert [c.name for c in first.cases] == ["c0", "c1", "c2"]
    assert first.cases[0].labelled_phases == (0,)
    assert first.fingerprint == second.fingerprint and first.fingerprint.startswith("sha256:")


def test_pairs_by_file_name_without_a_training_list(tmp_path, flair_card):
    folder = _folder(tmp_path)
    _case(folder, "a", _labels(values=(1,)))
    _case(folder, "b", np.zeros((12, 12, 8)))  # a case without lesions is labelled too
    (folder / "imagesTr" / "b.nii.gz").rename(folder / "imagesTr" / "b_0000.nii.gz")  # nnU-Net
    _write(folder, [], modality={"0": "FLAIR"}, labels={"background": 0, "lesion": 1})
    dataset = open_site_dataset(zip_tree(folder, tmp_path / "ds.zip"), tmp_path / "x", flair_card)
    assert [(c.name, c.image.name) for c in dataset.cases] == [
        ("a", "a.nii.gz"),
        ("b", "b_0000.nii.gz"),
    ]


def test_sparse_4d_labels_ed_es_only_from_the_phantom_generator(tmp_path, lv_card):
    spec = DatasetSpec("lv-ct", "B", cases=2, phases=5, label_phases="ed_es", seed=3)
    folder = write_msd_dataset(spec, tmp_path / "ds", workers=1)
    dataset = open_site_dataset(zip_tree(folder, tmp_path / "ds.zip"), tmp_path / "x", lv_card)
    assert [c.labelled_phases for c in dataset.cases] == [(0, 2), (0, 2)]


def test_every_problem_is_listed_per_case_and_nothing_is_left(tmp_path, lv_card):
    folder = _folder(tmp_path)
    shifted = AFFINE.copy()
    shifted[0, 3] = 0.6  # half a voxel off the image grid
    entries = [
        _case(folder, "good", _labels()),
        _case(folder, "wrong_labels", _labels(values=(1, 3))),
        _case(folder, "off_grid", _labels(), label_affine=shifted),
        _case(folder, "other_shape", _labels(), image_shape=(12, 12, 9)),
        _case(folder, "empty_4d", np.zeros((12, 12, 8, 3))),
        {"image": "./imagesTr/gone.nii.gz", "label": "./labelsTr/gone.nii.gz"},
        {"image": "../../etc/passwd", "label": "./labelsTr/sneaky.nii.gz"},
    ]
    entries.append(entries[0])  # listed twice
    _write(folder, entries, labels={"0": "background", "1": "LV blood pool", "4": "RV"})
    destination = tmp_path / "x"
    with pytest.raises(InvalidDataset) as raised:
        open_site_dataset(zip_tree(folder, tmp_path / "ds.zip"), destination, lv_card)
    error = raised.value
    found = {(p["case"], p["code"]) for p in error.details["problems"]}
    assert found == {
        (None, "label_mismatch"),
        ("wrong_labels", "unexpected_labels"),
        ("off_grid", "geometry_mismatch"),
        ("other_shape", "shape_mismatch"),
        ("empty_4d", "unlabelled_case"),
        ("gone", "missing_image"),
        ("gone", "missing_label"),
        ("sneaky", "path_outside_dataset"),
        ("good", "duplicate_case"),
    }
    assert error.status == 422 and "[3]" in next(
        p["message"] for p in error.details["problems"] if p["code"] == "unexpected_labels"
    )
    assert not destination.exists()  # nothing half-extracted stays


def test_description_problems_modality_channels_and_too_few_cases(tmp_path, flair_card):
    folder = _folder(tmp_path)
    _write(
        folder,
        [_case(folder, "only", _labels(values=(1,)))],
        modality={"0": "CT", "1": "PET"},
        labels={"0": "background", "1": "lesion"},
    )
    with pytest.raises(InvalidDataset) as raised:
        open_site_dataset(zip_tree(folder, tmp_path / "ds.zip"), tmp_path / "x", flair_card)
    codes = sorted(p["code"] for p in raised.value.details["problems"])
    assert codes == ["channel_count", "modality_mismatch", "modality_mismatch", "too_few_cases"]


def test_missing_or_broken_dataset_json(tmp_path, lv_card):
    folder = _folder(tmp_path)
    _case(folder, "a", _labels())
    _case(folder, "b", _labels())
    with pytest.raises(InvalidDataset) as raised:
        open_site_dataset(zip_tree(folder, tmp_path / "1.zip"), tmp_path / "x1", lv_card)
    assert [p["code"] for p in raised.value.details["problems"]] == ["missing_dataset_json"]
    (folder / "dataset.json").write_text("{not json")
    with pytest.raises(InvalidDataset) as raised:
        open_site_dataset(zip_tree(folder, tmp_path / "2.zip"), tmp_path / "x2", lv_card)
    assert [p["code"] for p in raised.value.details["problems"]] == ["bad_dataset_json"]


def test_corrupt_label_file_is_a_case_problem(tmp_path, lv_card):
    folder = _folder(tmp_path)
    entries = [_case(folder, name, _labels()) for name in ("a", "b")]
    (folder / "labelsTr" / "b.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    _write(folder, entries)
    with pytest.raises(InvalidDataset) as raised:
        open_site_dataset(zip_tree(folder, tmp_path / "ds.zip"), tmp_path / "x", lv_card)
    assert [(p["case"], p["code"]) for p in raised.value.details["problems"]] == [
        ("b", "unreadable_label")
    ]


def test_hostile_zips_are_refused_before_extraction(tmp_path, lv_card):
    traversal = tmp_path / "evil.zip"
    with zipfile.ZipFile(traversal, "w") as z:
        z.writestr("dataset.json", "{}")
        z.writestr("../outside.txt", "x")
    with pytest.raises(UnsafeArchive):
        open_site_dataset(traversal, tmp_path / "x1", lv_card)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("imagesTr/a.nii", b"\0" * (50 << 20))
    with pytest.raises(PayloadTooLarge):
        open_site_dataset(bomb, tmp_path / "x2", lv_card, ZipLimits(max_ratio=100))
    assert not (tmp_path / "x1").exists() and not (tmp_path / "x2").exists()
    assert not (tmp_path / "outside.txt").exists()
