"""Resident memory of the whole service process tree: idle after start, after one request
of each kind, after a fine-tune job.

    .venv/bin/python bench/footprint.py [--out bench/results/footprint.json]

Starts ``sitetune-serve`` on the embedded defaults (1 HTTP worker, the fine-tune worker
and the PACS worker supervised), waits until ready and idle, and sums the RSS of every
process below it (BentoML's arbiter, the HTTP worker, both supervisors and their
workers), per process as well. Target: idle <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOKEN = "footprint-token"


def tree(pid: int) -> dict:
    import psutil

    root = psutil.Process(pid)
    rows, total = [], 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            rss = proc.memory_info().rss
            modules = {m.path.split("/site-packages/")[-1].split("/")[0] for m in proc.memory_maps()
                       if "/site-packages/" in m.path}  # fmt: skip
            rows.append({
                "pid": proc.pid,
                "command": " ".join(proc.cmdline()[1:3])[:80],
                "rss_mb": round(rss / 2**20),
                "torch_loaded": "torch" in modules,
            })  # fmt: skip
            total += rss
        except psutil.Error:
            pass
    return {"total_mb": round(total / 2**20), "processes": rows}


def settle(pid: int, seconds: float = 8.0) -> dict:
    time.sleep(seconds)
    return tree(pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="bench/results/footprint.json")
    parser.add_argument("--skip-job", action="store_true", help="no fine-tune job row")
    args = parser.parse_args()
    import httpx

    from sitetune.imaging.dicom_write import write_dicom_series
    from sitetune.imaging.nifti import save_nifti
    from sitetune.imaging.phantoms.brain import brain_phantom
    from sitetune.imaging.phantoms.cardiac import cardiac_phantom
    from sitetune.imaging.phantoms.dataset import DatasetSpec, write_msd_dataset

    result: dict = {"machine": {"cpus": os.cpu_count()}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ, SITETUNE_DATA_DIR=str(tmp / "data"), SITETUNE_PORT=str(port),
                   SITETUNE_TOKENS=f"ops={TOKEN}", SITETUNE_WORKERS="1")  # fmt: skip
        log = (tmp / "server.log").open("w")
        serve = str(Path(sys.executable).parent / "sitetune-serve")
        proc = subprocess.Popen([serve], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=base, timeout=900,
                              headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            result["idle_after_start"] = settle(proc.pid)
            cardiac = cardiac_phantom(3, "A", phases=2, spacing=(1.5, 1.5, 1.5))
            nifti = save_nifti(cardiac.image.array.astype("int16"), tmp / "c.nii.gz",
                               affine=cardiac.image.affine)  # fmt: skip
            brain = brain_phantom(21, "A", n_lesions=6, spacing=(2.0, 2.0, 2.0))
            files = write_dicom_series(brain.image, tmp / "flair", series_description="flair")
            flair = io.BytesIO()
            with zipfile.ZipFile(flair, "w") as z:
                for f in files:
                    z.write(f, f.name)
            for route, upload, fields in (
                ("/v1/segment", ("c.nii.gz", nifti.read_bytes()), {"model": "lv-ct"}),
                ("/v1/thickness", ("c.nii.gz", nifti.read_bytes()), {}),
                ("/v1/lesion-volume", ("flair.zip", flair.getvalue()), {}),
            ):
                answer = client.post(route, files={"file": upload}, data=fields)
                answer.raise_for_status()
                rid = answer.json()["result_id"]
                if route == "/v1/lesion-volume":
                    client.get(f"/v1/results/{rid}/seg").raise_for_status()
            result["after_requests"] = settle(proc.pid)
            if not args.skip_job:
                spec = DatasetSpec("lv-ct", "B", cases=3, phases=3, label_phases="ed_es", seed=4)
                folder = write_msd_dataset(spec, tmp / "ds", workers=1)
                dataset = io.BytesIO()
                with zipfile.ZipFile(dataset, "w") as z:
                    for f in sorted(folder.rglob("*")):
                        if f.is_file():
                            z.write(f, f.relative_to(folder).as_posix())
                job = client.post("/v1/jobs", files={"dataset": ("ds.zip", dataset.getvalue())},
                                  data={"base": "lv-ct", "epochs": "1",
                                        "iterations_per_epoch": "2"}).json()  # fmt: skip
                for _ in range(900):
                    state = client.get(f"/v1/jobs/{job['job_id']}").json()["state"]
                    if state in ("succeeded", "failed", "cancelled"):
                        break
                    time.sleep(1)
                result["job_state"] = state
                result["after_job"] = settle(proc.pid)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    result["target_idle_mb"] = 1536
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v["total_mb"] for k, v in result.items() if isinstance(v, dict)
                      and "total_mb" in v}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
