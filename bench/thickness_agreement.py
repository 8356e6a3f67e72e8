"""Wall thickness from predicted masks against ground truth, on site-B cardiac 4D phantoms.

    .venv/bin/python bench/thickness_agreement.py [--cases 10] [--phases 5] [--site B]
        [--fine-tune 5] [--model-dir DIR] [--out bench/results/thickness_agreement.json]

Each case is a site-B ``lv-ct`` phantom with ``--phases`` frames (ES at 40 % of R-R). The
built-in ``lv-ct`` production model (ONNX Runtime, CPU) segments every frame; ED/ES are
chosen and thickness is measured by the same code as ``POST /v1/thickness``
(``measure_ventricle``) on the predicted and on the true label maps. The table gives,
for median, p95 and max thickness at ED and at ES, Pearson r, bias and mean absolute
difference (``thickness_agreement``, which the fine-tune evaluation reuses), how often
ED/ES were picked right, and per-case rows; per AHA segment (and pooled), Pearson r and bias
of the segment medians at ED and ES; the mean ratio of predicted to true ED myocardium
volume; and case 0's ED bullseye (``--bullseye``, PNG). With ``--fine-tune N`` (default 5)
the same is measured again (``fine_tuned``) for the model a site would run after its own
fine-tune: the base fine-tuned on N labelled cases of the same site (ED/ES labels, the
job's default recipe at the ``standard`` budget), other seeds than the measured cases.
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
from sitetune.imaging.phantoms.dataset import DatasetSpec, write_msd_dataset
from sitetune.measure.ventricle import measure_ventricle, thickness_agreement
from sitetune.models.builtin import load_builtin
from sitetune.models.engines import OrtEngine
from sitetune.models.export import export_onnx
from sitetune.models.inference import segment
from sitetune.training.datasets import validate_site_dataset
from sitetune.training.finetune import FineTuneConfig, apply_strategy, training_cases
from sitetune.training.loop import Trainer

FIRST_SEED = 900_000  # away from the seeds the base model was trained and evaluated on
TRAIN_SEED = 910_000  # the site's own labelled cases for the fine-tuned arm (not measured)


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


def fine_tuned(card, network, site: str, cases: int, work: Path):
    """The base network after what a site's fine-tune job does to it: ``cases`` labelled
    (ED/ES) cases of ``site``, the job's default recipe at the ``standard`` budget."""
    spec = DatasetSpec("lv-ct", site, cases=cases, phases=5, label_phases="ed_es",
                       seed=TRAIN_SEED)  # fmt: skip
    dataset = validate_site_dataset(write_msd_dataset(spec, work / "site", workers=2), card)
    config = FineTuneConfig(budget="standard", seed=0)
    apply_strategy(network, config.strategy, config.seed)
    trainer = Trainer(network, training_cases(dataset.cases, card), config.train_config(card))
    started = time.perf_counter()
    while trainer.epoch < config.epochs:
        trainer.run_epoch()
    info = {"cases": cases, "site": site, "label_phases": "ed_es",
            "config": config.model_dump(mode="json"),
            "train_seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    return network.eval(), info


def measure_model(card, network, args, tmp: Path, name: str, bullseye: str | None) -> dict:
    """Agreement of ``network``'s masks with the truth on the bench's cases."""
    predicted, reference, rows = [], [], []
    export_onnx(network, card, tmp / f"{name}.onnx", check_batches=1)
    engine = OrtEngine(tmp / f"{name}.onnx", providers=["CPUExecutionProvider"])
    for case_index in range(args.cases):
        started = time.perf_counter()
        case = cardiac_phantom(FIRST_SEED + case_index, args.site, phases=args.phases)
        labels = segment(case.image, card, engine).labels
        ours = measure_ventricle(labels, case.image.affine, case.image.phases)
        truth = measure_ventricle(case.labels.array, case.labels.affine, case.labels.phases)
        predicted.append(ours)
        reference.append(truth)
        row = {"case": case_index, "true_ed_es": [case.ed_phase, case.es_phase]}
        for who, report in (("predicted", ours), ("truth", truth)):
            body = report.to_json()
            row[who] = {
                role: {"index": body[role]["index"], **body[role]["thickness_mm"]}
                for role in ("ed", "es")
            }
            for role in ("ed", "es"):
                row[who][role]["segment_medians"] = [
                    (s[role] or {}).get("median") for s in report.segments_json() or []
                ]
        volumes = [(report.to_json()["ed"]["volumes_ml"]["myocardium"]) for report in (ours, truth)]
        row["ed_myocardium_volume_ratio"] = round(volumes[0] / volumes[1], 4)
        if case_index == 0 and bullseye:  # the README's picture: case 0's ED, predicted mask
            medians = {s["id"]: (s["ed"] or {}).get("median") for s in ours.segments_json()}
            picture, _ = draw_bullseye(
                medians, title=f"ED wall thickness, segment median (site-{args.site} case 0)"
            )
            Path(bullseye).write_bytes(picture)
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(name, json.dumps(row), flush=True)
    ratios = [r["ed_myocardium_volume_ratio"] for r in rows]
    return {
        "agreement": thickness_agreement(predicted, reference),
        "segment_median_agreement": segment_agreement(rows),
        "ed_myocardium_volume_ratio": round(float(np.mean(ratios)), 4),
        "cases": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--phases", type=int, default=5)
    parser.add_argument("--site", default="B")
    parser.add_argument("--fine-tune", type=int, default=5, metavar="N",
                        help="also measure it fine-tuned on N site cases; 0: skip")  # fmt: skip
    parser.add_argument("--out", default="bench/results/thickness_agreement.json")
    parser.add_argument("--bullseye", default="bench/results/bullseye_case0_ed.png")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="a base model folder (card.json, weights.pt) instead of the "
                             "built-in lv-ct, e.g. one from sitetune.training.base")  # fmt: skip
    args = parser.parse_args()
    model = args.model_dir or "lv-ct"
    card, network = load_builtin(model)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        base = measure_model(card, network, args, tmp, "base", args.bullseye)
        result = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "site": args.site,
            "phases": args.phases,
            "model": {"name": card.name, "version": str(args.model_dir or "built-in")},
            **base,
        }
        if args.fine_tune:
            _, network = load_builtin(model)
            network, info = fine_tuned(card, network, args.site, args.fine_tune, tmp)
            result["fine_tuned"] = {**info, **measure_model(card, network, args, tmp, "tuned",
                                                            None)}  # fmt: skip
    for name, body in (("base", result), ("fine_tuned", result.get("fine_tuned"))):
        if body:
            print(name, json.dumps({"agreement": body["agreement"]}, indent=2))
            pooled = {k: v["pooled"] for k, v in body["segment_median_agreement"].items()}
            print(name, json.dumps(pooled), body["ed_myocardium_volume_ratio"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
