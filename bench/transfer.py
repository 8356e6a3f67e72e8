"""Transfer learning on phantoms, site A -> site B, for both model families.

    .venv/bin/python bench/transfer.py [--epochs 10] [--iterations 15] [--held-out 10]
        [--families lv-ct flair-lesion] [--out bench/results/transfer.json]

The built-in base models were trained on site-A phantoms. Each arm starts from them (or
from random weights) and trains on site-B cases with the fine-tune job's own code
(`apply_strategy`, `Trainer`), then is evaluated on the same held-out site-B cases with
`evaluate_networks` (the job's evaluation):

- ``base``: the site-A model as it is;
- ``all`` with 5 and with 10 site-B cases (every layer, learning rate 1e-4);
- ``scratch`` with the same 5 and 10 cases (random initialisation, learning rate 1e-3);
- ``decoder`` and ``head`` with 5 cases;
- ``lv-ct`` only: ``all`` with 5 cases labelled at every phase against ED/ES only (the
  other rows use ED/ES-only labels, as a site would label).

Every arm gets the same number of iterations (``--epochs`` x ``--iterations``), small by
default so the whole run fits in about 30 minutes on 2 CPU cores; raise them for longer
runs. Writes the JSON table (``rows``) and a markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from sitetune.imaging.phantoms.dataset import DatasetSpec, write_msd_dataset
from sitetune.imaging.phantoms.sites import Family
from sitetune.models.builtin import load_builtin
from sitetune.training.datasets import validate_site_dataset
from sitetune.training.evaluation import evaluate_networks
from sitetune.training.finetune import FineTuneConfig, Strategy, apply_strategy, training_cases
from sitetune.training.loop import Trainer

TRAIN_SEED, HELD_OUT_SEED = 4242, 5353  # dataset seeds (the base models used others)


def _arms(family: Family) -> list[tuple[str, int | None, str | None]]:
    """(arm, cases, label phases) in table order."""
    phases = "ed_es" if family is Family.LV_CT else None
    arms = [
        ("base", None, None),
        ("all", 5, phases),
        ("all", 10, phases),
        ("scratch", 5, phases),
        ("scratch", 10, phases),
        ("decoder", 5, phases),
        ("head", 5, phases),
    ]
    if family is Family.LV_CT:
        arms.insert(2, ("all", 5, "all"))
    return arms


def _dataset(family: Family, cases: int, seed: int, label_phases: str, folder: Path):
    spec = DatasetSpec(
        family,
        "B",
        cases=cases,
        phases=5 if family is Family.LV_CT else 1,
        label_phases=label_phases,
        seed=seed,
    )
    card, _ = load_builtin(family.value)
    return validate_site_dataset(write_msd_dataset(spec, folder, workers=2), card)


def _row(family: Family, arm: str, cases, phases, metrics: dict, seconds: float) -> dict:
    row = {
        "family": family.value,
        "arm": arm,
        "n_cases": cases,
        "phases": phases,
        "dice": metrics["dice"],
        "mean_dice": metrics["mean_dice"],
        "volume_abs_error_ml": metrics["volume_abs_error_ml"],
        "train_seconds": seconds,
    }
    if "thickness_agreement" in metrics:
        row["thickness_agreement"] = metrics["thickness_agreement"]
    if "wmh" in metrics:
        row["wmh"] = {k: v["mean"] for k, v in metrics["wmh"].items()}
        row["wmh_cases_defined"] = {k: v["defined"] for k, v in metrics["wmh"].items()}
    return row


def run_family(family: Family, args, work: Path) -> list[dict]:
    held_out = _dataset(family, args.held_out, HELD_OUT_SEED, "all", work / f"{family}-held")
    labels = ["ed_es", "all"] if family is Family.LV_CT else ["all"]
    pools = {
        lp: _dataset(family, 10, TRAIN_SEED, lp, work / f"{family}-train-{lp}") for lp in labels
    }
    networks, seconds = {}, {}
    for arm, cases, phases in _arms(family):
        key = f"{arm}/{cases}/{phases}"
        started = time.perf_counter()
        card, network = load_builtin(family.value)
        if arm != "base":
            config = FineTuneConfig(
                strategy=Strategy(arm),
                epochs=args.epochs,
                iterations_per_epoch=args.iterations,
                seed=args.seed,
            )
            apply_strategy(network, config.strategy, config.seed)
            cases_used = training_cases(pools[phases or "all"].cases[:cases], card)
            trainer = Trainer(network, cases_used, config.train_config(card))
            while trainer.epoch < config.epochs:
                trainer.run_epoch()
        networks[key] = network.eval()
        seconds[key] = round(time.perf_counter() - started, 1)
        print(f"{family} {key}: trained in {seconds[key]} s", flush=True)
    # One pass over the held-out cases for every arm: the references are measured once.
    started = time.perf_counter()
    metrics = evaluate_networks(held_out.cases, card, networks)
    print(f"{family}: evaluated in {time.perf_counter() - started:.0f} s", flush=True)
    rows = []
    for arm, cases, phases in _arms(family):
        key = f"{arm}/{cases}/{phases}"
        rows.append(_row(family, arm, cases, phases, metrics[key], seconds[key]))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| family | arm | cases | labelled phases | Dice per label | mean Dice | family metrics |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        dice = ", ".join(f"{k} {v:.3f}" for k, v in r["dice"].items())
        if "thickness_agreement" in r:
            agreement = r["thickness_agreement"]
            extra = "thickness error of the median: ED {:.2f} mm, ES {:.2f} mm".format(
                agreement["ed_median"]["mean_abs_diff_mm"],
                agreement["es_median"]["mean_abs_diff_mm"],
            )
        elif "wmh" in r:
            w, defined = r["wmh"], r["wmh_cases_defined"]
            extra = (
                f"HD95 {w['hd95_mm']:.1f} mm ({defined['hd95_mm']} cases defined), "
                f"AVD {w['avd_pct']:.0f} %, lesion F1 {w['lesion_f1']:.2f}, "
                f"volume error {w['volume_difference_ml']:.2f} mL"
            )
        else:
            extra = ""
        lines.append(
            f"| {r['family']} | {r['arm']} | {r['n_cases'] or '-'} | {r['phases'] or '-'} "
            f"| {dice} | {r['mean_dice']:.3f} | {extra} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=15, help="iterations per epoch")
    parser.add_argument("--held-out", type=int, default=10, help="held-out site-B cases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--families", nargs="+", default=[f.value for f in (Family.LV_CT, Family.FLAIR_LESION)]
    )
    parser.add_argument("--out", default="bench/results/transfer.json")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            rows += run_family(Family(family), args, Path(tmp))
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {
            "epochs": args.epochs,
            "iterations_per_epoch": args.iterations,
            "held_out_cases": args.held_out,
            "seed": args.seed,
            "learning_rate": {"fine-tune": 1e-4, "scratch": 1e-3},
        },
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))
    print(f"total {result['seconds']} s")


if __name__ == "__main__":
    main()
