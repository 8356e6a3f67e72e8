"""Wall thickness from predicted masks against ground truth, on site-B cardiac 4D phantoms.

    .venv/bin/python bench/thickness_agreement.py [--cases 10] [--phases 5]
        [--out bench/results/thickness_agreement.json]

Each case is a site-B ``lv-ct`` phantom with ``--phases`` frames (ES at 40 % of R-R). The
built-in ``lv-ct`` production model (ONNX Runtime, CPU) segments every frame; ED/ES are
chosen and thickness is measured by the same code as ``POST /v1/thickness``
(``measure_ventricle``) on the predicted and on the true label maps. The table gives,
for median, p95 and max thickness at ED and at ES, Pearson r, bias and mean absolute
difference (``thickness_agreement``, which the fine-tune evaluation reuses), how often
ED/ES were picked right, and per-case rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from sitetune.imaging.phantoms.cardiac import cardiac_phantom
from sitetune.measure.ventricle import measure_ventricle, thickness_agreement
from sitetune.models.builtin import load_builtin
from sitetune.models.engines import OrtEngine
from sitetune.models.export import export_onnx
from sitetune.models.inference import segment

FIRST_SEED = 900_000  # away from the seeds the base model was trained and evaluated on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--phases", type=int, default=5)
    parser.add_argument("--site", default="B")
    parser.add_argument("--out", default="bench/results/thickness_agreement.json")
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
            row["seconds"] = round(time.perf_counter() - started, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "site": args.site,
        "phases": args.phases,
        "model": {"name": card.name, "version": "built-in"},
        "agreement": thickness_agreement(predicted, reference),
        "cases": rows,
    }
    print(json.dumps({"agreement": result["agreement"]}, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
