"""Wall thickness from predicted masks against ground truth, on site-B cardiac 4D phantoms.

    .venv/bin/python bench/thickness_agreement.py [--cases 10] [--phases 5]
        [--out bench/results/thickness_agreement.json]

Each case is a site-B ``lv-ct`` phantom with ``--phases`` frames (ES at 40 % of R-R). The
built-in ``lv-ct`` production model (ONNX Runtime, CPU) segments every frame; ED/ES are
chosen and thickness is measured by the same code as ``POST /v1/thickness``
(``measure_ventricle``) on the predicted and on the true label maps. The table gives,
for median, p95 and max thickness at ED and at ES, Pearson r, bias and mean absolute
difference (``thickness_agreement``, which the fine-tune evaluation reuses), how often
ED/ES were picked right, and per-case rows; per AHA segment (and pooled), Pearson r and bias
of the segment medians at ED and ES; and case 0's ED bullseye (``--bullseye``, PNG).
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

from sitetune.analysis.bullseye import draw_bullseye
from sitetune.imaging.phantoms.cardiac import cardiac_phantom
from sitetune.measure.ventricle import measure_ventricle, thickness_agreement
from sitetune.models.builtin import load_builtin
from sitetune.models.engines import OrtEngine
from sitetune.models.export import export_onnx
from sitetune.models.inference import segment

FIRST_SEED = 900_000  # away from the seeds the base model was trained and evaluated on


def segment_agreement(rows: list[dict]) -> dict:
    """Per AHA segment and pooled over all 17, at ED and ES: Pearson r and bias of the
    segment medians, predicted against true masks (each on its own long axis)."""
    out = {}
    for role in ("ed", "es"):
        pairs = {k: [] for k in range(1, 18)}
        for row in rows:
            ours, truth = (row[n][role]["segment_medians"] for n in ("predicted", "truth"))
            for k, (a, b) in enumerate(zip(ours, truth, strict=True), 1):
                if a is not None and b is not None:
                    pairs[k].append((a, b))

        def stats(values):
            a, b = (np.array(v) for v in zip(*values, strict=True))
            r = float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and a.std() and b.std() else None
            return {"pearson_r": None if r is None else round(r, 4),
                    "bias_mm": round(float((a - b).mean()), 3), "cases": len(a)}  # fmt: skip

        pooled = [p for v in pairs.values() for p in v]
        out[role] = {"pooled": stats(pooled) if pooled else None,
                     "per_segment": {k: stats(v) for k, v in pairs.items() if v}}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--phases", type=int, default=5)
    parser.add_argument("--site", default="B")
    parser.add_argument("--out", default="bench/results/thickness_agreement.json")
    parser.add_argument("--bullseye", default="bench/results/bullseye_case0_ed.png")
    args = parser.parse_args()
    card, network = load_builtin("lv-ct")
    predicted, reference, rows = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(network, card, Path(tmp) / "m.onnx", check_batches=1)
        engine = OrtEngine(Path(tmp) / "m.onnx", providers=["CPUExecutionProvider"])
        for case_index in range(args.cases):
            started = time.perf_counter()
            case = cardiac_phantom(FIRST_SEED + case_index, args.site, phases=args.phases)
            labels = segment(case.image, card, engine).labels
            ours = measure_ventricle(labels, case.image.affine, case.image.phases)
            truth = measure_ventricle(case.labels.array, case.labels.affine, case.labels.phases)
            predicted.append(ours)
            reference.append(truth)
            row = {"case": case_index, "true_ed_es": [case.ed_phase, case.es_phase]}
            for name, report in (("predicted", ours), ("truth", truth)):
                body = report.to_json()
                row[name] = {
                    role: {"index": body[role]["index"], **body[role]["thickness_mm"]}
                    for role in ("ed", "es")
                }
            for role in ("ed", "es"):
                for name, report in (("predicted", ours), ("truth", truth)):
                    row[name][role]["segment_medians"] = [
                        (s[role] or {}).get("median") for s in report.segments_json() or []
                    ]
            if case_index == 0:  # the README's picture: case 0's ED, predicted mask
                medians = {s["id"]: (s["ed"] or {}).get("median") for s in ours.segments_json()}
                picture, _ = draw_bullseye(
                    medians, title="ED wall thickness, segment median (site-B case 0)"
                )
                Path(args.bullseye).write_bytes(picture)
            row["seconds"] = round(time.perf_counter() - started, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "site": args.site,
        "phases": args.phases,
        "model": {"name": card.name, "version": "built-in"},
        "agreement": thickness_agreement(predicted, reference),
        "segment_median_agreement": segment_agreement(rows),
        "cases": rows,
    }
    print(json.dumps({"agreement": result["agreement"]}, indent=2))
    print(json.dumps({k: v["pooled"] for k, v in result["segment_median_agreement"].items()}))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
