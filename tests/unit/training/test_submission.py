"""Job submission: options and base checked first, then the dataset, then the queued row;
a refused submission leaves no row and no job folder."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sitetune.db import connect
from sitetune.errors import InvalidInput, NotFound, UnsafeArchive
from sitetune.imaging.nifti import save_nifti
from sitetune.models.builtin import BUILTIN_DIR
from sitetune.models.card import FineTuneDefaults, ModelCard
from sitetune.models.registry import PRODUCTION, Registry
from sitetune.training.datasets import InvalidDataset, open_site_dataset
from sitetune.training.jobs import JobState, JobStore
from sitetune.training.submission import check_job_request, submit_job
from tests.conftest import zip_tree

AFFINE = np.diag([1.2, 1.2, 2.5, 1.0])


@pytest.fixture
def stores(tmp_path) -> tuple[JobStore, Registry]:
    engine = connect(f"sqlite:///{tmp_path / 'db.sqlite'}")
    artifacts = tmp_path / "artifacts"
    registry = Registry(engine, artifacts)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    for family in ("lv-ct", "flair-lesion"):
        card = ModelCard.model_validate_json((BUILTIN_DIR / family / "card.json").read_text())
        registry.register(
            card.model_copy(update={"version": None}),
            {"weights.pt": weights},
            actor="ops",
            aliases=(PRODUCTION,),
        )
    return JobStore(engine, artifacts), registry


def _dataset(tmp_path: Path, label_values=(1, 2)) -> Path:
    """An MSD zip of three small lv-ct cases, ``c0`` to ``c2``."""
    folder = tmp_path / "ds"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    entries = []
    for i in range(3):
        labels = np.zeros((12, 12, 8), np.uint8)
        for k, value in enumerate(label_values):
            labels[2 + 3 * k : 4 + 3 * k, 3:6, 2:5] = value
        image = np.random.default_rng(i).normal(size=labels.shape).astype(np.float32)
        save_nifti(image, folder / "imagesTr" / f"c{i}.nii.gz", affine=AFFINE)
        save_nifti(labels, folder / "labelsTr" / f"c{i}.nii.gz", affine=AFFINE)
        entries.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    labels = {"0": "background", "1": "LV blood pool", "2": "LV myocardium"}
    description = {"modality": {"0": "CT"}, "labels": labels, "training": entries}
    (folder / "dataset.json").write_text(json.dumps(description))
    return zip_tree(folder, tmp_path / "ds.zip")


def _nothing_left(store: JobStore) -> bool:
    return store.list() == [] and (not store.root.exists() or not any(store.root.iterdir()))


def test_a_valid_submission_queues_the_job_with_its_dataset(stores, tmp_path):
    store, registry = stores
    archive = _dataset(tmp_path)
    options = {"epochs": 3, "val_cases": ["c1"], "seed": None, "strategy": "decoder"}
    request = check_job_request(registry, "lv-ct", options)
    assert request.base.ref == "lv-ct:1"  # the alias resolved to a version
    job = submit_job(store, request, archive, actor="alice")
    assert job == store.get(job.id)
    assert job.state is JobState.QUEUED and job.base == "lv-ct:1" and job.created_by == "alice"
    assert job.config["epochs"] == 3 and job.config["val_cases"] == ["c1"]
    assert job.config["seed"] == 0 and job.config["strategy"] == "decoder"  # None: default
    assert job.config["learning_rate"] == 1e-4  # the fine-tuning default, filled in
    assert job.config["augment"] == "site_shift" and job.config["warmup_fraction"] == 0.05
    assert job.config["layerwise_lr_decay"] == 1.0 and job.config["foreground_fraction"] == 0.67
    dataset = store.folder(job.id) / "dataset"
    assert (dataset / "dataset.json").is_file() and len(list(dataset.glob("labelsTr/*"))) == 3
    reference = open_site_dataset(archive, tmp_path / "again", request.base.card)
    assert job.dataset_fingerprint == reference.fingerprint
    assert archive.is_file()  # the caller's upload is the caller's to remove


@pytest.mark.parametrize(
    ("base", "options", "error", "code", "words"),
    [
        ("lv-ct", {"strategy": "everything"}, InvalidInput, "invalid_job", "strategy"),
        ("lv-ct", {"epochs": 0, "val_fraction": 1.5}, InvalidInput, "invalid_job", "val_fraction"),
        ("lv-ct", {"augment": "heavy"}, InvalidInput, "invalid_job", "augment"),
        ("lv-ct", {"warmup_fraction": 0.9}, InvalidInput, "invalid_job", "warmup_fraction"),
        ("flair-lesion", {"augment": "contrast"}, InvalidInput, "invalid_job", "window card"),
        ("", {}, InvalidInput, "missing_base", "'base'"),
        ("no-such-model", {}, NotFound, "model_not_found", "no-such-model"),
        ("lv-ct:7", {}, NotFound, "version_not_found", "no version 7"),
    ],
)
def test_bad_options_or_base_are_refused_before_the_dataset(
    stores, base, options, error, code, words
):
    store, registry = stores
    with pytest.raises(error) as raised:
        check_job_request(registry, base, options)
    assert raised.value.code == code and words in raised.value.message
    assert raised.value.status == (404 if error is NotFound else 422)
    assert _nothing_left(store)


def test_the_site_shift_recipe_options_are_taken(stores):
    _, registry = stores
    options = {"augment": "light", "foreground_fraction": 0.9, "warmup_fraction": 0.1,
               "layerwise_lr_decay": 0.5}  # fmt: skip
    config = check_job_request(registry, "lv-ct", options).config.model_dump(mode="json")
    assert {k: config[k] for k in options} == options


def test_the_base_cards_recommended_options_fill_what_the_job_leaves_unset(stores, tmp_path):
    _, registry = stores
    weights = tmp_path / "w2.pt"
    weights.write_bytes(b"weights")
    card = registry.resolve("lv-ct").card
    recommended = {"augment": "light", "learning_rate": 3e-4, "foreground_fraction": 0.5}
    registry.register(
        card.model_copy(update={"version": None, "fine_tune": FineTuneDefaults(**recommended)}),
        {"weights.pt": weights},
        actor="ops",
    )
    config = check_job_request(registry, "lv-ct:2", {}).config
    assert (config.augment, config.learning_rate, config.foreground_fraction) == (
        "light", 3e-4, 0.5)  # fmt: skip
    given = check_job_request(registry, "lv-ct:2", {"augment": "none"}).config
    assert (given.augment, given.learning_rate) == ("none", 3e-4)  # the job's own wins
    scratch = check_job_request(registry, "lv-ct:2", {"strategy": "scratch"}).config
    assert scratch.learning_rate == 1e-3  # a fine-tuning rate does not apply from scratch
    plain = check_job_request(registry, "lv-ct:1", {}).config  # a card that states none
    assert (plain.augment, plain.learning_rate) == ("site_shift", 1e-4)


def test_a_card_cannot_recommend_ct_contrast_augmentation_for_mr():
    card = ModelCard.model_validate_json((BUILTIN_DIR / "flair-lesion" / "card.json").read_text())
    wrong = card.model_dump(mode="json") | {"fine_tune": {"augment": "contrast"}}
    with pytest.raises(InvalidInput, match="window intensity") as raised:
        ModelCard.parse(json.dumps(wrong))
    assert raised.value.code == "invalid_card"
    ct = ModelCard.model_validate_json((BUILTIN_DIR / "lv-ct" / "card.json").read_text())
    fits = ct.model_dump(mode="json") | {"fine_tune": {"augment": "contrast"}}
    assert ModelCard.parse(json.dumps(fits)).fine_tune.augment == "contrast"


def test_invalid_job_lists_every_bad_option(stores):
    _, registry = stores
    with pytest.raises(InvalidInput) as raised:
        check_job_request(registry, "lv-ct", {"epochs": 0, "batch_size": 1000})
    assert "epochs" in raised.value.message and "batch_size" in raised.value.message


def _hostile(tmp_path: Path) -> Path:
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("dataset.json", "{}")
        z.writestr("../../escape.txt", "x")
    return path


@pytest.mark.parametrize(
    ("archive", "options", "error", "status", "code"),
    [
        (lambda p: _dataset(p, label_values=(1, 3)), {}, InvalidDataset, 422, "invalid_dataset"),
        (_hostile, {}, UnsafeArchive, 400, "unsafe_archive"),
        (_dataset, {"val_cases": ["nope"]}, InvalidInput, 422, "unknown_val_cases"),
        (_dataset, {"val_cases": ["c0", "c1", "c2"]}, InvalidInput, 422, "bad_split"),
    ],
)
def test_a_refused_dataset_leaves_no_row_and_no_folder(
    stores, tmp_path, archive, options, error, status, code
):
    store, registry = stores
    request = check_job_request(registry, "lv-ct", options)
    with pytest.raises(error) as raised:
        submit_job(store, request, archive(tmp_path), actor="alice")
    assert (raised.value.status, raised.value.code) == (status, code)
    assert _nothing_left(store)
    assert not (tmp_path / "escape.txt").exists()


def test_a_failed_row_write_removes_the_extracted_dataset(stores, tmp_path, monkeypatch):
    store, registry = stores
    seen = []

    def failing_submit(job_id, *args):
        seen.append((store.folder(job_id) / "dataset" / "dataset.json").is_file())
        raise RuntimeError("database is locked")

    monkeypatch.setattr(store, "submit", failing_submit)
    request = check_job_request(registry, "lv-ct", {})
    with pytest.raises(RuntimeError, match="locked"):
        submit_job(store, request, _dataset(tmp_path), actor="alice")
    assert seen == [True]  # the dataset was in place when the row was written ...
    assert _nothing_left(store)  # ... and is gone with the failed write
