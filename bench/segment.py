"""Segmentation speed and memory: HTTP end to end, model compute per engine, and a MONAI
bundle-style pipeline against sitetune on a CCTA-sized input.

    .venv/bin/python bench/segment.py [--runs 5] [--out bench/results/segment.json]

Everything runs in this one invocation, side by side, on the built-in ``lv-ct`` weights:

1. HTTP: a real ``sitetune-serve`` (1 worker); ``POST /v1/segment`` of NIfTI phantoms of
   about 128^3, 192x192x160 and 256x256x200 voxels at 1 mm (so the network grid grows
   with the input); median and p95 of ``--runs`` requests after one warm-up, the
   server's own stage timings, and the workers' peak RSS.
2. Model compute alone on the same network-grid images: MONAI
   ``sliding_window_inference`` feeding ONNX Runtime (CPU EP, ORT_ENABLE_ALL) and feeding
   torch eager, same windows, overlap and Gaussian blending; medians of ``--runs``.
3. CCTA-sized input (512x512x200 at 0.5x0.5x0.7 mm): the MONAI bundle-style pipeline
   (LoadImaged, EnsureChannelFirstd, Orientationd, Spacingd 1 mm, ScaleIntensityRanged,
   sliding_window_inference, Invertd, AsDiscreted, SaveImaged) in its own process,
   against sitetune's HTTP round trip (upload, segment, download the mask) on the same
   file; wall time and peak RSS of each.

4. DICOM: the 192x192x160 phantom as a zipped DICOM series (160 CT instances);
   ``POST /v1/segment`` median of ``--runs``, then, for one result, the first
   ``GET /v1/results/{id}/seg`` (the SEG and SR are built then, not in the POST) and a
   second one (cached), and ``GET .../sr``.

The service overhead is end-to-end latency minus the model compute measured in 2.
``--only dicom`` runs section 4 alone (``--out`` then gets only that row).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

TOKEN = "bench-token"
SIZES = {"128^3": (128, 128, 112), "192x192x160": (192, 192, 160), "256x256x200": (256, 256, 200)}
CCTA_SHAPE, CCTA_SPACING = (512, 512, 200), (0.5, 0.5, 0.7)


def median_p95(values: list[float]) -> dict:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(np.ceil(0.95 * len(ordered))) - 1)]
    return {
        "median_s": round(statistics.median(ordered), 3),
        "p95_s": round(p95, 3),
        "runs": len(ordered),
    }


def write_phantom(shape: tuple[int, int, int], spacing, path: Path) -> None:
    from sitetune.imaging.nifti import save_nifti
    from sitetune.imaging.phantoms.cardiac import cardiac_phantom

    fov = tuple(n * s for n, s in zip(shape, spacing, strict=True))
    case = cardiac_phantom(77, "A", spacing=spacing, fov_mm=fov)
    save_nifti(case.image.array.astype(np.int16), path, affine=case.image.affine)


class RssSampler:
    """Peak summed RSS of a process tree, sampled every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            time.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def start_server(data_dir: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ,
        SITETUNE_DATA_DIR=str(data_dir),
        SITETUNE_PORT=str(port),
        SITETUNE_TOKENS=f"ops={TOKEN}",
        SITETUNE_WORKERS="1",
    )
    log = (data_dir.parent / "server.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "sitetune-serve")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    import httpx

    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not become ready")


def segment_over_http(base: str, path: Path, download: bool = False) -> tuple[float, dict]:
    import httpx

    headers = {"Authorization": f"Bearer {TOKEN}"}
    started = time.perf_counter()
    with httpx.Client(base_url=base, timeout=600, headers=headers) as client, path.open("rb") as f:
        response = client.post(
            "/v1/segment", files={"file": (path.name, f)}, data={"model": "lv-ct"}
        )
        response.raise_for_status()
        body = response.json()
        if download:
            client.get(f"/v1/results/{body['result_id']}/mask").raise_for_status()
    return time.perf_counter() - started, body


def write_dicom_zip(tmp: Path, shape=SIZES["192x192x160"]) -> Path:
    """The phantom as a zipped DICOM series under ``tmp``; returns the zip."""
    import zipfile

    from sitetune.imaging.dicom_write import write_dicom_series
    from sitetune.imaging.phantoms.cardiac import cardiac_phantom

    case = cardiac_phantom(77, "A", spacing=(1.0, 1.0, 1.0), fov_mm=tuple(float(n) for n in shape))
    path = tmp / "dicom" / "series.zip"
    path.parent.mkdir()
    folder = path.parent / "dicom-series"
    files = write_dicom_series(case.image, folder, series_description="heart")
    with zipfile.ZipFile(path, "w") as z:
        for f in files:
            z.write(f, f.name)
    return path


def dicom_row(base: str, path: Path, runs: int) -> dict:
    """POST the DICOM zip ``runs`` times; then time the SEG (first: built; second: cached)
    and the SR of the last result."""
    import httpx

    segment_over_http(base, path)  # warm-up
    posts = [segment_over_http(base, path) for _ in range(runs)]
    body = posts[-1][1]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    gets = {}
    with httpx.Client(base_url=base, timeout=600, headers=headers) as client:
        for name, route in (("seg_first", "seg"), ("seg_again", "seg"), ("sr", "sr")):
            started = time.perf_counter()
            response = client.get(f"/v1/results/{body['result_id']}/{route}")
            gets[name] = {
                "status": response.status_code,
                "s": round(time.perf_counter() - started, 3),
                "bytes": len(response.content),
            }
    stages = {
        k: round(statistics.median(b["timings_ms"].get(k, 0.0) for _, b in posts), 1)
        for k in posts[0][1]["timings_ms"]
    }
    return {
        "instances": int(body["input"]["shape"][2]),
        "http_post": median_p95([wall for wall, _ in posts]),
        "server_stage_ms": stages,
        "get": gets,
    }


def compute_alone(path: Path, runs: int) -> dict:
    """Model compute on the network grid: SWI + ORT vs SWI + torch eager."""
    from sitetune.imaging.load import load_volume
    from sitetune.models.builtin import load_builtin
    from sitetune.models.engines import OrtEngine, TorchEngine
    from sitetune.models.export import export_onnx
    from sitetune.models.inference import probabilities
    from sitetune.models.preprocess import to_network_grid

    card, network = load_builtin("lv-ct")
    volume = load_volume(path)
    image, grid = to_network_grid(volume.array, volume.affine, card)
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(network, card, Path(tmp) / "m.onnx", check_batches=1)
        engines = {
            "onnxruntime_cpu": OrtEngine(Path(tmp) / "m.onnx", providers=["CPUExecutionProvider"]),
            "torch_eager_cpu": TorchEngine(network),
        }
        times: dict[str, list[float]] = {name: [] for name in engines}
        for engine in engines.values():
            probabilities(engine, image, card)  # warm-up
        for _ in range(runs):  # interleaved, so drift hits both alike
            for name, engine in engines.items():
                started = time.perf_counter()
                probabilities(engine, image, card)
                times[name].append(time.perf_counter() - started)
    out = {name: median_p95(values) for name, values in times.items()}
    out["network_grid"] = list(grid.shape)
    out["ort_over_torch"] = round(
        out["onnxruntime_cpu"]["median_s"] / out["torch_eager_cpu"]["median_s"], 3
    )
    return out


MONAI_PIPELINE = r"""
import json, resource, sys, time, torch
from monai.data import Dataset, decollate_batch
from monai.inferers import sliding_window_inference
from monai.transforms import (AsDiscreted, Compose, EnsureChannelFirstd, Invertd, LoadImaged,
                              Orientationd, SaveImaged, ScaleIntensityRanged, Spacingd)
from sitetune.models.builtin import load_builtin
src, pixdim, out_dir = sys.argv[1], float(sys.argv[2]), sys.argv[3]
torch.set_num_threads(2)
card, net = load_builtin("lv-ct")
t0 = time.perf_counter()
pre = Compose([LoadImaged("image"), EnsureChannelFirstd("image"),
               Orientationd("image", axcodes="RAS"),
               Spacingd("image", pixdim=(pixdim,) * 3, mode="bilinear"),
               ScaleIntensityRanged("image", a_min=-200, a_max=600, b_min=0, b_max=1, clip=True)])
data = pre({"image": src})
t1 = time.perf_counter()
with torch.no_grad():
    data["pred"] = sliding_window_inference(data["image"][None], card.patch_size, 1, net,
                                            overlap=0.25, mode="gaussian")[0]
t2 = time.perf_counter()
post = Compose([Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False),
                AsDiscreted("pred", argmax=True),
                SaveImaged("pred", output_dir=out_dir, output_postfix="seg", resample=False,
                           print_log=False)])
post(data)
t3 = time.perf_counter()
print(json.dumps({"preprocess_s": t1 - t0, "inference_s": t2 - t1, "invert_save_s": t3 - t2,
                  "total_s": t3 - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def monai_pipeline(path: Path, pixdim: float) -> dict:
    with tempfile.TemporaryDirectory() as out:
        run = subprocess.run(
            [sys.executable, "-c", MONAI_PIPELINE, str(path), str(pixdim), out],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ccta-runs", type=int, default=3)
    parser.add_argument("--out", default="bench/results/segment.json")
    parser.add_argument("--only", choices=["dicom"], help="run one section alone")
    args = parser.parse_args()
    if args.only == "dicom":
        return dicom_only(args)
    result: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "sizes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = {}
        for name, shape in SIZES.items():
            inputs[name] = tmp / f"{name}.nii.gz"
            write_phantom(shape, (1.0, 1.0, 1.0), inputs[name])
        ccta = tmp / "ccta.nii.gz"
        write_phantom(CCTA_SHAPE, CCTA_SPACING, ccta)
        dicom_zip = write_dicom_zip(tmp)
        proc, base = start_server(tmp / "data")
        try:
            result["dicom"] = dicom_row(base, dicom_zip, args.runs)
            print(json.dumps({"dicom": result["dicom"]}), flush=True)
            for name, path in inputs.items():
                segment_over_http(base, path)  # warm-up
                with RssSampler(proc.pid) as rss:
                    runs = [segment_over_http(base, path) for _ in range(args.runs)]
                walls = [wall for wall, _ in runs]
                stages = {
                    k: round(statistics.median(b["timings_ms"][k] for _, b in runs), 1)
                    for k in runs[0][1]["timings_ms"]
                }
                entry = {
                    "shape": list(SIZES[name]),
                    "http": median_p95(walls),
                    "server_stage_ms": stages,
                    "backend": runs[0][1]["backend"],
                    "server_peak_rss_mb": round(rss.peak / 2**20),
                }
                entry["compute_alone"] = compute_alone(path, args.runs)
                best = min(
                    entry["compute_alone"]["onnxruntime_cpu"]["median_s"],
                    entry["compute_alone"]["torch_eager_cpu"]["median_s"],
                )
                served = entry["compute_alone"][
                    "onnxruntime_cpu" if entry["backend"].startswith("onnx") else "torch_eager_cpu"
                ]["median_s"]
                overhead = 1 - served / entry["http"]["median_s"]
                entry["service_overhead_fraction"] = round(overhead, 3)
                entry["fastest_engine_s"] = best
                result["sizes"][name] = entry
                print(json.dumps({name: entry}), flush=True)
            with RssSampler(proc.pid) as rss:
                ccta_runs = [
                    segment_over_http(base, ccta, download=True)[0] for _ in range(args.ccta_runs)
                ]
            sitetune_ccta = median_p95(ccta_runs) | {"peak_rss_mb": round(rss.peak / 2**20)}
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        monai_rows = {}
        for pixdim in (1.0, 1.5):
            rows = [monai_pipeline(ccta, pixdim) for _ in range(args.ccta_runs)]
            monai_rows[f"spacing_{pixdim}mm"] = {
                key: round(statistics.median(r[key] for r in rows), 2) for key in rows[0]
            }
        result["ccta"] = {
            "shape": list(CCTA_SHAPE),
            "spacing_mm": list(CCTA_SPACING),
            "sitetune_http_roundtrip": sitetune_ccta,
            "monai_bundle_pipeline": monai_rows,
            "sitetune_over_monai_1mm": round(
                sitetune_ccta["median_s"] / monai_rows["spacing_1.0mm"]["total_s"], 3
            ),
        }
        print(json.dumps({"ccta": result["ccta"]}), flush=True)
    result["bench_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


def dicom_only(args) -> None:
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        proc, base = start_server(tmp / "data")
        try:
            result["dicom"] = dicom_row(base, write_dicom_zip(tmp), args.runs)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    print(json.dumps(result, indent=2), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
