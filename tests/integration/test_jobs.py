"""Fine-tune jobs through a real `bentoml serve` and its real worker process."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sitetune.imaging.nifti import save_nifti
from sitetune.imaging.phantoms.cardiac import cardiac_phantom
from sitetune.imaging.phantoms.dataset import DatasetSpec, write_msd_dataset
from tests.conftest import zip_tree

TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def site_zip(tmp_path_factory) -> Path:
    """Three site-B 4D cardiac cases labelled at ED and ES only, as an MSD zip."""
    root = tmp_path_factory.mktemp("site")
    spec = DatasetSpec("lv-ct", "B", cases=3, phases=5, label_phases="ed_es", seed=11)
    folder = write_msd_dataset(spec, root / "ds", workers=2)
    return zip_tree(folder, root / "site.zip")


def _submit(client, dataset: Path, **fields):
    data = {"base": "lv-ct", "epochs": "2", "iterations_per_epoch": "2", **fields}
    with dataset.open("rb") as f:
        return client.post("/v1/jobs", files={"dataset": (dataset.name, f)}, data=data)


def _wait(client, job_id: str, until, timeout: float = 400.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if until(job):
            return job
        if time.monotonic() > deadline:
            log = client.get(f"/v1/jobs/{job_id}/logs").text
            pytest.fail(f"job {job_id} stuck in {job['state']}:\n{json.dumps(job)}\n{log}")
        time.sleep(0.5)


def _versions(client) -> list[int]:
    return [v["version"] for v in client.get("/v1/models/lv-ct").json()["versions"]]


def test_cancel_stops_a_running_job_and_registers_nothing(server, site_zip):
    with server.client("ops") as ops:
        before = _versions(ops)
        response = _submit(ops, site_zip, epochs="200", iterations_per_epoch="3")
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["state"] == "queued"
        _wait(ops, job["job_id"], lambda j: (j["progress"] or {}).get("epoch", 0) >= 1)
        asked = time.monotonic()
        cancel = ops.post(f"/v1/jobs/{job['job_id']}/cancel")
        assert cancel.status_code == 200 and cancel.json()["cancel_requested"]
        done = _wait(ops, job["job_id"], lambda j: j["state"] in TERMINAL, timeout=60)
        assert done["state"] == "cancelled" and time.monotonic() - asked < 30
        assert done["result"] is None and _versions(ops) == before
        assert "cancelled; nothing registered" in ops.get(f"/v1/jobs/{job['job_id']}/logs").text
        again = ops.post(f"/v1/jobs/{job['job_id']}/cancel")
        assert again.status_code == 200 and again.json()["state"] == "cancelled"


def test_job_end_to_end_registers_promotes_and_serves(server, site_zip, tmp_path):
    with server.client("ops") as ops:
        production = ops.get("/v1/models/lv-ct").json()["aliases"]["production"]
        response = _submit(ops, site_zip, auto_promote="true", promote_margin="1.0", seed="3")
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        job = _wait(ops, job_id, lambda j: j["state"] in TERMINAL)
        assert job["state"] == "succeeded", job["error"]
        assert job["progress"]["epoch"] == job["progress"]["epochs"] == 2
        result = job["result"]
        training = result["training"]  # stated before training, measured after
        assert training["estimate"]["training_s"] > 0 and training["actual_training_s"] > 0
        assert job["progress"]["estimate"] == training["estimate"]
        assert training["kept_epoch"] in (1, 2) and training["stopped_by"] == "the last epoch"
        assert "held-out Dice" in training["kept_because"]
        evaluation = result["evaluation"]
        assert len(evaluation["held_out_cases"]) == 1 and len(evaluation["training_cases"]) == 2
        for arm in ("candidate", "production"):
            assert set(evaluation[arm]["dice"]) == {"LV blood pool", "LV myocardium"}
            assert evaluation[arm]["thickness_agreement"]["cases"] == 1
        assert evaluation["production_version"] == f"lv-ct:{production}"
        assert "postprocessing" not in evaluation  # the heart keeps its largest components
        assert evaluation["gate"]["passed"] and result["promoted"]
        model = ops.get("/v1/models/lv-ct").json()
        assert model["aliases"]["production"] == model["aliases"]["candidate"] == result["version"]
        card = next(v for v in model["versions"] if v["version"] == result["version"])["card"]
        assert card["provenance"]["parent"] == f"lv-ct:{production}"
        assert card["provenance"]["dataset_fingerprint"] == job["dataset_fingerprint"]
        assert card["provenance"]["training"]["strategy"] == "all"
        assert card["metrics"]["site_evaluation"]["gate"]["passed"]
        logs = ops.get(f"/v1/jobs/{job_id}/logs")
        assert "epoch 2/2" in logs.text and int(logs.headers["X-Log-Offset"]) == len(logs.content)
        # case names are often MRNs: neither the log nor the card carries them
        with zipfile.ZipFile(site_zip) as z:
            names = {
                Path(n).name.split(".")[0].removesuffix("_0000")
                for n in z.namelist()
                if n.startswith("labelsTr/") and n.endswith(".nii.gz")
            }
        assert len(names) == 3 and evaluation["held_out_cases"][0].startswith("case-")
        for text in (logs.text, json.dumps(card), json.dumps(result)):
            assert not any(name in text for name in names), names
        # the next segmentation uses the promoted version, without a restart
        case = cardiac_phantom(77, "B", spacing=(2.0, 2.0, 2.0))
        upload = tmp_path / "case.nii.gz"
        save_nifti(case.image.array.astype(np.int16), upload, affine=case.image.affine)
        with upload.open("rb") as f:
            segment = ops.post("/v1/segment", files={"file": f}, data={"model": "lv-ct"}).json()
        assert segment["model"]["version"] == str(result["version"])
        audit = ops.get("/v1/audit", params={"model": "lv-ct"}).json()["entries"]
        assert audit[0]["action"] == "promote" and audit[0]["actor"] == f"job:{job_id}"
        rolled = ops.post("/v1/models/lv-ct/rollback", json={"reason": "test cleanup"})
        assert rolled.json()["to_version"] == production
    # job states are exported on /metrics (refreshed from the database every 5 s)
    deadline = time.monotonic() + 60
    while not _succeeded_jobs_on_metrics(server):
        assert time.monotonic() < deadline, "no succeeded job on /metrics"
        time.sleep(1)


def test_a_lesion_job_chooses_its_lesion_cleanup_on_the_held_out_split(server, tmp_path):
    """A ``flair-lesion`` job tries the smallest kept lesion component at several sizes on
    its held-out case, reports the scores and why it kept one, and the candidate's card
    (which the service would serve) carries the size it kept."""
    spec = DatasetSpec("flair-lesion", "B", cases=3, phases=1, seed=12)
    dataset = zip_tree(write_msd_dataset(spec, tmp_path / "ds", workers=2), tmp_path / "ds.zip")
    with server.client("ops") as ops:
        response = _submit(ops, dataset, base="flair-lesion", epochs="1")
        assert response.status_code == 202, response.text
        job = _wait(ops, response.json()["job_id"], lambda j: j["state"] in TERMINAL)
        assert job["state"] == "succeeded", job["error"]
        evaluation = job["result"]["evaluation"]
        choice = evaluation["postprocessing"]
        assert choice["card_min_component_ml"] == 0.01 and choice["frames"] == 1
        sizes = [row["min_component_ml"] for row in choice["scores"]]
        assert sizes == sorted(sizes) and 0.01 in sizes and choice["min_component_ml"] in sizes
        assert choice["because"]
        model = ops.get("/v1/models/flair-lesion").json()
        version = job["result"]["version"]
        card = next(v for v in model["versions"] if v["version"] == version)["card"]
        assert card["labels"][0]["min_component_ml"] == choice["min_component_ml"]
        assert card["metrics"]["site_evaluation"]["postprocessing"] == choice
        assert "lesion components kept from" in ops.get(
            f"/v1/jobs/{job['job_id']}/logs").text  # fmt: skip


def _succeeded_jobs_on_metrics(server) -> bool:
    with server.client() as client:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith('sitetune_jobs{state="succeeded"}'):
                return float(line.rsplit(" ", 1)[1]) >= 1
    return False


def test_killed_worker_resumes_the_job_from_its_checkpoint(server, site_zip):
    with server.client("ops") as ops:
        job_id = _submit(ops, site_zip, epochs="4", iterations_per_epoch="2").json()["job_id"]
        running = _wait(ops, job_id, lambda j: (j["progress"] or {}).get("epoch", 0) >= 1)
        pid = int(running["worker"].rpartition(":")[2])  # "host:pid"
        os.kill(pid, signal.SIGKILL)
        job = _wait(ops, job_id, lambda j: j["state"] in TERMINAL)
        logs = ops.get(f"/v1/jobs/{job_id}/logs").text
    assert job["state"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    assert "resumed from the checkpoint after epoch" in logs
    # The held-out Dice curve spans the epochs of both attempts, once each.
    assert [epoch for epoch, _ in job["progress"]["val_mean_dice"]] == [1, 2, 3, 4]


def test_gate_refuses_a_worse_candidate_unless_forced(server):
    with server.client("ops") as ops:
        production = ops.get("/v1/models/lv-ct").json()["aliases"]["production"]
        gate = {"passed": False, "reason": "candidate mean Dice 0.5 is below production's 0.9"}
        evaluation = {"production_version": f"lv-ct:{production}", "gate": gate}
        registered = server.register_production_copy(
            ops, "lv-ct", metrics={"site_evaluation": evaluation}
        ).json()
        refused = ops.post(
            "/v1/models/lv-ct/promote",
            json={"version": registered["version"], "reason": "try"},
        )
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "promotion_refused"
        assert "below production" in refused.json()["error"]["message"]
        forced = ops.post(
            "/v1/models/lv-ct/promote",
            json={"version": registered["version"], "reason": "radiologist review", "force": True},
        )
        assert forced.status_code == 200 and forced.json()["to_version"] == registered["version"]
        entry = ops.get("/v1/audit", params={"model": "lv-ct"}).json()["entries"][0]
        assert "forced past the gate" in entry["reason"] and "radiologist review" in entry["reason"]
        ops.post("/v1/models/lv-ct/rollback", json={"reason": "test cleanup"})
        assert ops.get("/v1/models/lv-ct").json()["aliases"]["production"] == production


def test_invalid_submissions_get_4xx_listing_the_problems(server, site_zip, tmp_path):
    bad = tmp_path / "bad"
    with zipfile.ZipFile(site_zip) as z:
        z.extractall(bad)
    meta = json.loads((bad / "dataset.json").read_text())
    first_label = bad / meta["training"][0]["label"]
    image = nib.load(first_label)
    data = np.asarray(image.dataobj).copy()
    data[0, 0, 0, 0] = 5  # a label lv-ct does not have
    affine = image.affine.copy()
    nib.save(nib.Nifti1Image(data, affine), first_label)
    second_label = bad / meta["training"][1]["label"]
    image = nib.load(second_label)
    shifted = image.affine.copy()
    shifted[:3, 3] += 0.7
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), shifted), second_label)
    bad_zip = zip_tree(bad, tmp_path / "bad.zip")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../escape.txt", "x")
    with server.client("ops") as ops:
        jobs_before = len(ops.get("/v1/jobs").json()["jobs"])
        wrong = _submit(ops, bad_zip)
        hostile = _submit(ops, evil)
        unknown_base = _submit(ops, site_zip, base="no-such-model")
        bad_option = _submit(ops, site_zip, strategy="everything")
        bad_budget = _submit(ops, site_zip, budget="forever")
        bad_split = _submit(ops, site_zip, val_cases="nope")
        assert len(ops.get("/v1/jobs").json()["jobs"]) == jobs_before  # nothing queued
    assert wrong.status_code == 422
    problems = {(p["case"], p["code"]) for p in wrong.json()["error"]["details"]["problems"]}
    names = [Path(e["label"]).name.removesuffix(".nii.gz") for e in meta["training"]]
    assert problems == {(names[0], "unexpected_labels"), (names[1], "geometry_mismatch")}
    assert hostile.status_code == 400 and hostile.json()["error"]["code"] == "unsafe_archive"
    assert unknown_base.status_code == 404
    assert bad_option.status_code == 422 and "strategy" in bad_option.json()["error"]["message"]
    assert bad_budget.status_code == 422 and "budget" in bad_budget.json()["error"]["message"]
    assert bad_split.status_code == 422 and bad_split.json()["error"]["code"] == "unknown_val_cases"
    leftovers = list((server.data_dir / "artifacts" / "jobs").glob("*"))
    assert len(leftovers) == jobs_before  # rejected submissions left no folder


def test_jobs_need_the_ops_role(server, site_zip):
    with server.client("clinical") as clinical:
        assert _submit(clinical, site_zip).status_code == 403
        assert clinical.get("/v1/jobs").status_code == 403
    with server.client() as anonymous:
        assert anonymous.get("/v1/jobs").status_code == 401


def test_cli_submits_follows_and_summarises_a_job(server, site_zip, capsys):
    from sitetune.clients.cli import main
    from tests.server import TOKENS

    common = ["--url", server.base_url, "--token", TOKENS["ops"]]
    code = main(
        [*common, "jobs", "submit", str(site_zip), "--base", "lv-ct", "--epochs", "1",
         "--iterations-per-epoch", "1", "--wait", "--interval", "0.5"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "succeeded" in out and re.search(r"^version: lv-ct:\d+$", out, re.MULTILINE)
    assert "promoted: no (auto_promote is off" in out
    assert main([*common, "jobs", "list"]) == 0
    assert "succeeded" in capsys.readouterr().out
