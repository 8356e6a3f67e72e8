"""One fine-tune job through a real ``sitetune-serve``, timed as a site would see it.

    .venv/bin/python bench/finetune_job.py [--family flair-lesion] [--cases 5]
        [--budget standard] [--site B] [--out bench/results/finetune_job.json]

Starts the service on a fresh data directory (embedded worker, SQLite), uploads ``--cases``
site phantoms as an MSD zip, submits a job on the built-in base model at ``--budget`` and
polls it to the end. Writes the wall time from submission to ``succeeded``, the job's own
estimate against its measured training time, the epoch it kept and why, the lesion
post-processing it chose (lesion models) and the held-out metrics of candidate and
production.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from sitetune.imaging.phantoms.dataset import DatasetSpec, write_msd_dataset

TOKEN = "bench-ops-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(root: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, SITETUNE_DATA_DIR=str(root / "data"), SITETUNE_PORT=str(port),
               SITETUNE_TOKENS=f"ops={TOKEN}")  # fmt: skip
    serve = Path(sys.executable).parent / "sitetune-serve"
    log = (root / "server.log").open("w")
    return subprocess.Popen([str(serve)], cwd=root, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def _wait_ready(base: str, proc: subprocess.Popen, root: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit((root / "server.log").read_text()[-3000:])
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit("the service was not ready after 300 s")


def run(args: argparse.Namespace, root: Path) -> dict:
    port = _free_port()
    base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}
    (root / "data").mkdir()
    proc = _serve(root, port)
    try:
        _wait_ready(base, proc, root)
        phases = 5 if args.family == "lv-ct" else 1
        label_phases = "ed_es" if args.family == "lv-ct" else "all"
        spec = DatasetSpec(args.family, args.site, cases=args.cases, phases=phases,
                           label_phases=label_phases, seed=2024)  # fmt: skip
        folder = write_msd_dataset(spec, root / "dataset", workers=2)
        archive = Path(shutil.make_archive(str(root / "dataset"), "zip", folder))
        started = time.monotonic()
        with archive.open("rb") as f:
            response = httpx.post(f"{base}/v1/jobs", headers=headers, timeout=300,
                                  files={"dataset": (archive.name, f)},
                                  data={"base": args.family, "budget": args.budget})  # fmt: skip
        response.raise_for_status()
        job = response.json()
        while job["state"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(2)
            job = httpx.get(f"{base}/v1/jobs/{job['job_id']}", headers=headers).json()
        wall = time.monotonic() - started
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    result = job.get("result") or {}
    evaluation = result.get("evaluation", {})

    def means(entry: dict | None) -> dict:
        entry = entry or {}
        wmh = {k: v["mean"] for k, v in entry.get("wmh", {}).items()}
        return {"mean_dice": entry.get("mean_dice"), **wmh}

    return {
        "machine": {"cpus": os.cpu_count()},
        "settings": vars(args),
        "state": job["state"],
        "error": job.get("error"),
        "submitted_to_done_s": round(wall, 1),
        "training": result.get("training"),
        "postprocessing": evaluation.get("postprocessing"),
        "held_out_cases": len(evaluation.get("held_out_cases", [])),
        "candidate": means(evaluation.get("candidate")),
        "production": means(evaluation.get("production")),
        "gate": evaluation.get("gate"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--family", default="flair-lesion", choices=["flair-lesion", "lv-ct"])
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--budget", default="standard")
    parser.add_argument("--site", default="B")
    parser.add_argument("--out", default="bench/results/finetune_job.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = run(args, Path(tmp))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
