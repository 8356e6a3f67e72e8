"""Lesion volume and WMH challenge metrics from predicted masks, per site.

    .venv/bin/python bench/lesions.py [--cases 10] [--sites A B]
        [--out bench/results/lesions.json]

Each case is a ``flair-lesion`` phantom (site A: the base model's own site, 3D FLAIR at
1.2 mm; site B: the shifted site, 2D FLAIR 0.9 x 0.9 x 5 mm). The built-in production
model (ONNX Runtime, CPU) segments it, as ``POST /v1/lesion-volume`` does. Total lesion
volume and count come from ``lesion_statistics`` with the service's defaults (26-connected,
lesions under 0.015 mL dropped) on the predicted and on the true mask; the WMH metrics
(``wmh_metrics``) compare the raw masks. Per site: mean absolute error and Spearman r of
the total volume, mean absolute count error, and mean / median of every WMH metric over
the cases where it is defined.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from sitetune.imaging.phantoms.brain import brain_phantom
from sitetune.measure.lesions import lesion_statistics
from sitetune.measure.metrics import mean_metrics, wmh_metrics
from sitetune.models.builtin import load_builtin
from sitetune.models.engines import OrtEngine
from sitetune.models.export import export_onnx
from sitetune.models.inference import segment

FIRST_SEED = 910_000  # away from the seeds the base model was trained and evaluated on


def _site_summary(rows: list[dict]) -> dict:
    true_ml = np.array([r["true_ml"] for r in rows])
    predicted_ml = np.array([r["predicted_ml"] for r in rows])
    count_error = [abs(r["predicted_count"] - r["true_count"]) for r in rows]
    rho = spearmanr(predicted_ml, true_ml).statistic if len(rows) > 2 else float("nan")
    return {
        "cases": len(rows),
        "total_ml": {
            "mean_absolute_error": round(float(np.mean(np.abs(predicted_ml - true_ml))), 4),
            "spearman_r": round(float(rho), 4),
            "mean_true": round(float(true_ml.mean()), 4),
            "mean_predicted": round(float(predicted_ml.mean()), 4),
        },
        "count_mean_absolute_error": round(float(np.mean(count_error)), 3),
        "wmh": {
            key: {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}
            for key, stats in mean_metrics([r["wmh"] for r in rows]).items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=10, help="phantoms per site")
    parser.add_argument("--sites", nargs="+", default=["A", "B"])
    parser.add_argument("--out", default="bench/results/lesions.json")
    args = parser.parse_args()
    card, network = load_builtin("flair-lesion")
    per_site: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(network, card, Path(tmp) / "m.onnx", check_batches=1)
        engine = OrtEngine(Path(tmp) / "m.onnx", providers=["CPUExecutionProvider"])
        for site in args.sites:
            for case_index in range(args.cases):
                started = time.perf_counter()
                seed = FIRST_SEED + 1000 * (ord(site) - ord("A")) + case_index
                case = brain_phantom(seed, site)
                predicted = segment(case.image, card, engine).labels == 1
                truth = case.labels.array == 1
                affine = case.image.affine
                ours, reference = (
                    lesion_statistics(predicted, affine),
                    lesion_statistics(truth, affine),
                )
                row = {
                    "site": site,
                    "seed": seed,
                    "true_ml": round(reference.total_ml, 4),
                    "predicted_ml": round(ours.total_ml, 4),
                    "true_count": reference.count,
                    "predicted_count": ours.count,
                    "wmh": {
                        k: round(v, 4) if isinstance(v, float) else v
                        for k, v in wmh_metrics(predicted, truth, affine).items()
                    },
                    "seconds": round(time.perf_counter() - started, 1),
                }
                per_site.setdefault(site, []).append(row)
                print(json.dumps(row), flush=True)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "model": {"name": card.name, "version": "built-in"},
        "sites": {site: _site_summary(rows) for site, rows in per_site.items()},
        "cases": [row for rows in per_site.values() for row in rows],
    }
    print(json.dumps({"sites": result["sites"]}, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
