"""PACS path, end to end: STOW-RS in, analysis, SEG + SR delivered to a real Orthanc.

    .venv/bin/python bench/pacs.py [--runs 3] [--out bench/results/pacs.json]

Starts ``sitetune-serve`` (2 HTTP workers, its PACS worker) on a fresh data folder, and
Orthanc (Debian package) as the destination of every route. Per run and kind (a 10-phase
cardiac CT study sent as one series per phase, a 3D FLAIR series) it measures: the STOW-RS
request (seconds, MB/s), the time from the end of that request to the analysis being done
(which includes the settle delay, ``SITETUNE_PACS_SETTLE_SECONDS``, set to 1 here), the
analysis's own stage times, and the time until the SR is stored in Orthanc. Medians over
the runs; every run is kept in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sitetune.dicomweb import stow
from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.phantoms.brain import brain_phantom
from sitetune.imaging.phantoms.cardiac import cardiac_phantom
from tests.integration.orthanc import Orthanc, free_port

TOKEN = "bench-pacs-token"


def _config(orthanc: Orthanc) -> str:
    return f"""
[destinations.orthanc]
type = "dicomweb"
url = "{orthanc.url}/dicom-web"

[[routes]]
name = "cardiac-ct"
model = "lv-ct"
modality = "CT"
series_description = "heart"
group = "study"
destinations = ["orthanc"]

[[routes]]
name = "brain-flair"
model = "flair-lesion"
modality = "MR"
series_description = "flair"
destinations = ["orthanc"]
"""


def _wait(probe, timeout=600.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError


def _one(base: str, orthanc: Orthanc, files: list[Path]) -> dict:
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    started = time.perf_counter()
    response = stow(f"{base}/dicomweb", files, {"Authorization": f"Bearer {TOKEN}"}, 600)
    received = time.perf_counter()
    assert response.status_code == 200, response.text[:300]
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def done():
        analyses = httpx.get(f"{base}/v1/pacs/analyses", headers=headers).json()["analyses"]
        mine = [a for a in analyses if a["study_uid"] == study_uid]
        return mine[0] if mine and mine[0]["state"] in ("done", "failed") else None

    analysis = _wait(done)
    analysed = time.perf_counter()
    assert analysis["state"] == "done", analysis["error"]

    def in_orthanc():
        series = orthanc.series_of_study(study_uid)
        return any(s["MainDicomTags"].get("Modality") == "SR" for s in series)

    _wait(in_orthanc, step=0.1)
    delivered = time.perf_counter()
    return {
        "instances": len(files),
        "megabytes": round(size_mb, 2),
        "stow_seconds": round(received - started, 3),
        "stow_mb_per_s": round(size_mb / (received - started), 1),
        "request_end_to_analysis_done_seconds": round(analysed - received, 3),
        "analysis_ms": analysis["summary"]["timings_ms"],
        "request_start_to_sr_in_orthanc_seconds": round(delivered - started, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="bench/results/pacs.json")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-pacs-"))
    orthanc = Orthanc(root / "orthanc").start()
    port = free_port()
    (root / "data").mkdir()
    (root / "data" / "pacs.toml").write_text(_config(orthanc))
    env = dict(
        os.environ,
        SITETUNE_DATA_DIR=str(root / "data"),
        SITETUNE_PORT=str(port),
        SITETUNE_WORKERS="2",
        SITETUNE_TOKENS=f"pacs={TOKEN}",
        SITETUNE_PACS_SETTLE_SECONDS="1",
    )
    serve = Path(sys.executable).parent / "sitetune-serve"
    log = (root / "serve.log").open("w")
    proc = subprocess.Popen([str(serve)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    runs: dict[str, list[dict]] = {"cardiac_ct_10_phases": [], "flair_3d": []}
    try:
        _wait(lambda: _ready(base), timeout=600, step=0.5)
        for run in range(args.runs):
            cardiac = cardiac_phantom(700 + run, "A", phases=10)
            files = write_dicom_series(cardiac.image, root / f"ct{run}",
                                       series_description="cine heart")  # fmt: skip
            runs["cardiac_ct_10_phases"].append(_one(base, orthanc, files))
            flair = brain_phantom(800 + run, "A", n_lesions=10)
            files = write_dicom_series(flair.image, root / f"mr{run}",
                                       series_description="FLAIR 3D")  # fmt: skip
            runs["flair_3d"].append(_one(base, orthanc, files))
            print(json.dumps({k: v[-1] for k, v in runs.items()}), flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        orthanc.stop()
    keys = ("stow_seconds", "stow_mb_per_s", "request_end_to_analysis_done_seconds",
            "request_start_to_sr_in_orthanc_seconds")  # fmt: skip
    summary = {
        kind: {
            "instances": rows[0]["instances"],
            "megabytes": rows[0]["megabytes"],
            **{f"median_{k}": round(statistics.median(r[k] for r in rows), 3) for k in keys},
            "median_analysis_ms": {
                stage: round(statistics.median(r["analysis_ms"][stage] for r in rows), 1)
                for stage in rows[0]["analysis_ms"]
            },
        }
        for kind, rows in runs.items()
    }
    out = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "runs_per_kind": args.runs,
        "summary": summary,
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(summary, indent=2))


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
