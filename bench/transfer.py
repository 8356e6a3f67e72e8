"""Transfer learning on phantoms, site A -> a shifted site, for both model families.

    .venv/bin/python bench/transfer.py [--long] [--seeds 0 1 2] [--epochs E]
        [--iterations I] [--held-out N] [--ceiling-cases 40] [--ceiling-epochs 60]
        [--cardiac-site C] [--families lv-ct flair-lesion] [--ceiling-cache DIR]
        [--select 3] [--out bench/results/transfer.json] [--update]

The built-in base models were trained on site-A phantoms. The target site is ``B`` for
``flair-lesion`` and the harsher cardiac site ``C`` for ``lv-ct`` (`sitetune.imaging.
phantoms.sites`). Each arm starts from the base model (or from random weights) and trains
on target-site cases with the fine-tune job's own code (`FineTuneConfig`, `apply_strategy`,
`Trainer`) as a job on the base model without options is configured (`arm_config`: the
job's defaults and the card's recommended options) at the family's budget (`BUDGETS`),
then is evaluated on the same held-out target-site cases with `evaluate_networks` (the job's
evaluation):

- ``ceiling``: the in-domain ceiling, the same network trained from scratch on
  ``--ceiling-cases`` (>= 40) target-site cases as the base models were trained at site A
  (`CEILING`), once per family (seed-independent: one run, seed 0; with
  ``--ceiling-cache`` its weights are kept and reused by later runs with the same
  settings);
- ``base``: the site-A model as it is (deterministic, so seed-independent);
- ``all`` with 5 and with 10 cases (every layer), ``scratch`` with 5 (and 10 with
  ``--long``), ``decoder`` and ``head`` with 5;
- ``lv-ct`` only: ``all`` with 5 cases labelled at every phase against ED/ES only (the
  other rows use ED/ES-only labels, as a site would label).

Lesion models (``flair-lesion``) choose their post-processing as a fine-tune job does on
its held-out split (`sitetune.training.postprocessing.choose_min_component`: the smallest
kept lesion component): every trained network, the ceiling included, chooses on
``--select`` (3) further target-site cases that no arm trains on and that are not among the
held-out ones (5 training + 3 choosing cases: a job given 8 with those 3 as ``val_cases``);
the base model keeps its card's size; all@5 is also reported at the card's size (the row
whose ``postprocessing`` says "card's").

Every trained arm is run once per seed (``--seeds``: the training seed -- initialisation
for ``scratch``, patch sampling, augmentation; the training and held-out cases are the
same for every seed) and reported as mean and sd over the seeds, and as a fraction of the
ceiling's mean Dice (``of_ceiling``). Held-out ``lv-ct`` cases are labelled at ED and ES
(where the thickness is measured). ``--epochs`` / ``--iterations`` set every arm's budget
(a quick look); ``--long`` trains every arm the job's ``standard`` budget, the ceiling
twice as long, on more held-out cases. Held-out cases per family (`HELD_OUT`, or
``--held-out``): 4 for ``lv-ct`` (its Dice varies little from case to case), 10 for
``flair-lesion``, whose per-case Dice and F1 swing with a case's lesion load (one case in
10 has no lesion, some a single lesion of 0.1 mL, where a few false positives halve the
score): the same three all@5 networks score 0.444 on the first 4 and 0.509 on 10.
Writes the JSON table (``rows``) and a markdown table beside it; ``--update`` replaces
only the rows of ``--families`` in an existing ``--out`` (``runs`` lists which run measured
which family, ``seconds_by_family`` the time each took).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sitetune.imaging.phantoms.dataset import DatasetSpec, write_msd_dataset
from sitetune.imaging.phantoms.sites import Family
from sitetune.models.builtin import load_builtin
from sitetune.training.datasets import validate_site_dataset
from sitetune.training.evaluation import evaluate_networks
from sitetune.training.finetune import (
    FineTuneConfig,
    Strategy,
    apply_strategy,
    job_config,
    training_cases,
)
from sitetune.training.loop import Trainer
from sitetune.training.postprocessing import (
    card_min_component,
    choose_min_component,
    with_min_component,
)

TRAIN_SEED, HELD_OUT_SEED, CEILING_SEED = 4242, 5353, 6464  # dataset seeds (base: others)
SELECT_SEED, SELECT_CASES = 7171, 3  # lesion models choose their post-processing on these
LONG = {"epochs": 20, "iterations": 20, "held_out": 10, "ceiling_epochs": 120}
HELD_OUT = {Family.LV_CT: 4, Family.FLAIR_LESION: 10}  # held-out cases (`--held-out`: every family)
# Each family's training budget per arm (`FineTuneConfig` fields). The recipe is what a
# job on the base model gets without options: the job's defaults and the card's
# recommendations (`ModelCard.fine_tune`: for ``flair-lesion`` the ``light`` augmentation, a
# learning rate of 3e-4 and a fifth of the patches on lesions, measured here). Lesions need the
# job's ``standard`` budget (20 x 20); the heart transfers with a quarter of that (at 4 x 10
# all-phase labels trailed ED/ES-only ones by 0.025 mean Dice, at 10 x 10 by 0.005).
BUDGETS = {
    Family.LV_CT: {"epochs": 10, "iterations_per_epoch": 10},
    Family.FLAIR_LESION: {"budget": "standard"},
}
# The ceiling is trained as the built-in base models are (`sitetune.training.base`):
# 60 x 25 iterations, learning rate 1e-3, without augmentation (the lv-ct base varies the
# contrast enhancement to meet other sites' bolus timing; in-domain there is none to meet).
CEILING = {"epochs": 60, "iterations_per_epoch": 25, "augment": "none"}
THICKNESS_KEYS = [f"{role}_{stat}" for role in ("ed", "es") for stat in ("median", "p95", "max")]


def arm_config(family: Family, strategy: Strategy, seed: int, args) -> FineTuneConfig:
    """One trained arm's configuration, built as a job's is (`job_config`: the base card's
    recommendations, the job's defaults) with the family's `BUDGETS` entry, and
    ``--epochs``/``--iterations`` when given."""
    card, _ = load_builtin(family.value)
    options = BUDGETS[family] | {"strategy": strategy, "seed": seed}
    if args.epochs is not None:
        options["epochs"] = args.epochs
    if args.iterations is not None:
        options["iterations_per_epoch"] = args.iterations
    return job_config(card, options)


def _arms(family: Family, long: bool) -> list[tuple[str, int | None, str | None]]:
    """(arm, cases, label phases) in table order (the ceiling comes first, separately)."""
    phases = "ed_es" if family is Family.LV_CT else None
    arms = [("base", None, None), ("all", 5, phases), ("all", 10, phases)]
    arms += [("scratch", 5, phases)] + ([("scratch", 10, phases)] if long else [])
    arms += [("decoder", 5, phases), ("head", 5, phases)]
    if family is Family.LV_CT:
        arms.insert(2, ("all", 5, "all"))
    return arms


def held_out_cases(family: Family, args) -> int:
    return args.held_out if args.held_out is not None else HELD_OUT[family]


def target_site(family: Family, args) -> str:
    return args.cardiac_site if family is Family.LV_CT else "B"


def _dataset(family: Family, site: str, cases: int, seed: int, label_phases: str, folder: Path):
    spec = DatasetSpec(
        family,
        site,
        cases=cases,
        phases=5 if family is Family.LV_CT else 1,
        label_phases=label_phases if family is Family.LV_CT else "all",
        seed=seed,
    )
    card, _ = load_builtin(family.value)
    return validate_site_dataset(write_msd_dataset(spec, folder, workers=2), card)


def _train(network, card, cases, config: FineTuneConfig) -> None:
    """What a fine-tune job does to ``network`` (without its per-epoch held-out check)."""
    apply_strategy(network, config.strategy, config.seed)
    trainer = Trainer(network, training_cases(cases, card), config.train_config(card))
    while trainer.epoch < config.epochs:
        trainer.run_epoch()


def ceiling(family: Family, site: str, args, work: Path) -> tuple[torch.nn.Module, dict]:
    """The in-domain ceiling: the base network's architecture trained from scratch on
    ``args.ceiling_cases`` target-site cases (seed 0); its weights from ``--ceiling-cache``
    when a run with the same settings left them there."""
    config = FineTuneConfig(
        strategy=Strategy.SCRATCH,
        **(CEILING | {"epochs": args.ceiling_epochs}),
        seed=0,
    )
    key = json.dumps([family.value, site, args.ceiling_cases, CEILING_SEED,
                      config.model_dump(mode="json")], sort_keys=True)  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    cached = (
        Path(args.ceiling_cache) / f"ceiling-{family}-{site}-{digest}.pt"
        if args.ceiling_cache
        else None
    )
    card, network = load_builtin(family.value)
    info = {"cases": args.ceiling_cases, "epochs": config.epochs,
            "iterations_per_epoch": config.iterations_per_epoch, "cached": False}  # fmt: skip
    if cached is not None and cached.exists():
        network.load_state_dict(torch.load(cached, map_location="cpu"))
        info.update(cached=True, train_seconds=json.loads(cached.with_suffix(".json").read_text()))
        return network.eval(), info
    started = time.perf_counter()
    pool = _dataset(family, site, args.ceiling_cases, CEILING_SEED, "ed_es",
                    work / f"{family}-ceiling")  # fmt: skip
    _train(network, card, pool.cases, config)
    info["train_seconds"] = round(time.perf_counter() - started, 1)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.save(network.state_dict(), cached)
        cached.with_suffix(".json").write_text(json.dumps(info["train_seconds"]))
    return network.eval(), info


def _mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    defined = [v for v in values if v is not None and not np.isnan(v)]
    if not defined:
        return None, None
    sd = float(np.std(defined, ddof=1)) if len(defined) > 1 else 0.0
    return round(float(np.mean(defined)), 4), round(sd, 4)


def _aggregate(family, site, arm, cases, phases, runs: list[dict], seconds, ceiling_dice):
    """One table row: mean (and ``*_sd``) over the seeds' metrics ``runs``."""
    first = runs[0]
    labels = list(first["dice"])
    dice = {k: _mean_sd([r["dice"][k] for r in runs]) for k in labels}
    mean_dice = _mean_sd([r["mean_dice"] for r in runs])
    row = {
        "family": family.value,
        "site": site,
        "arm": arm,
        "n_cases": cases,
        "phases": phases,
        "seeds": len(runs),
        "dice": {k: v[0] for k, v in dice.items()},
        "dice_sd": {k: v[1] for k, v in dice.items()},
        "mean_dice": mean_dice[0],
        "mean_dice_sd": mean_dice[1],
        "of_ceiling": _mean_sd([r["mean_dice"] / ceiling_dice for r in runs])[0],
        "of_ceiling_sd": _mean_sd([r["mean_dice"] / ceiling_dice for r in runs])[1],
        "volume_abs_error_ml": {
            k: _mean_sd([r["volume_abs_error_ml"][k] for r in runs])[0]
            for k in first["volume_abs_error_ml"]
        },
        "train_seconds": _mean_sd(seconds)[0],
    }
    if all("thickness_agreement" in r for r in runs):
        agreement = {}
        for key in THICKNESS_KEYS:
            stats = [r["thickness_agreement"][key] for r in runs]
            agreement[key] = {}
            for stat in ("pearson_r", "bias_mm", "mean_abs_diff_mm"):
                mean, sd = _mean_sd([s[stat] for s in stats])
                agreement[key][stat], agreement[key][f"{stat}_sd"] = mean, sd
        agreement["cases_without_myocardium"] = max(
            r["thickness_agreement"]["cases_without_myocardium"] for r in runs
        )
        row["thickness_agreement"] = agreement
    if all("wmh" in r for r in runs):
        row["wmh"] = {k: _mean_sd([r["wmh"][k]["mean"] for r in runs])[0] for k in first["wmh"]}
        row["wmh_sd"] = {k: _mean_sd([r["wmh"][k]["mean"] for r in runs])[1] for k in first["wmh"]}
        row["lesion_volume_spearman"], row["lesion_volume_spearman_sd"] = _mean_sd(
            [r.get("lesion_volume_spearman") for r in runs]
        )
        row["wmh_cases_defined"] = {k: min(r["wmh"][k]["defined"] for r in runs)
                                    for k in first["wmh"]}  # fmt: skip
    return row


def run_family(family: Family, args, work: Path) -> tuple[list[dict], dict]:
    site = target_site(family, args)
    held_out = _dataset(
        family, site, held_out_cases(family, args), HELD_OUT_SEED, "ed_es", work / f"{family}-held"
    )
    labels = ["ed_es", "all"] if family is Family.LV_CT else ["all"]
    pools = {
        lp: _dataset(family, site, 10, TRAIN_SEED, lp, work / f"{family}-train-{lp}")
        for lp in labels
    }
    card, _ = load_builtin(family.value)
    lesions = card_min_component(card) is not None
    select = (
        _dataset(family, site, args.select, SELECT_SEED, "ed_es", work / f"{family}-select")
        if lesions
        else None
    )
    networks, seconds = {}, {}
    for arm, cases, phases in _arms(family, args.long):
        for seed in [0] if arm == "base" else args.seeds:
            key = f"{arm}/{cases}/{phases}/{seed}"
            started = time.perf_counter()
            _, network = load_builtin(family.value)
            if arm != "base":
                config = arm_config(family, Strategy(arm), seed, args)
                _train(network, card, pools[phases or "all"].cases[:cases], config)
            networks[key] = network.eval()
            seconds[key] = round(time.perf_counter() - started, 1)
            print(f"{family} {key}: trained in {seconds[key]} s", flush=True)
    networks["ceiling"], ceiling_info = ceiling(family, site, args, work)
    print(f"{family} ceiling: {ceiling_info}", flush=True)
    # Lesion models: every trained network chooses its smallest kept component on the
    # select cases, as a job does on its held-out split (`choose_min_component`); the
    # base model keeps its card's. all@5 is also evaluated at the card's (``@card``).
    cards, chosen = {}, {}
    if select is not None:
        started = time.perf_counter()
        for key, network in list(networks.items()):
            if key.startswith("base/"):
                continue
            choice = choose_min_component(select.cases, card, network)
            chosen[key] = choice["min_component_ml"]
            cards[key] = with_min_component(card, chosen[key])
            if key.startswith("all/5/"):
                networks[f"{key}@card"] = network
        print(f"{family}: post-processing chosen in {time.perf_counter() - started:.0f} s: "
              f"{chosen}", flush=True)  # fmt: skip
    # One pass over the held-out cases for every network: the references are measured once.
    started = time.perf_counter()
    metrics = evaluate_networks(held_out.cases, card, networks, cards=cards)
    print(f"{family}: evaluated in {time.perf_counter() - started:.0f} s", flush=True)
    if args.raw:  # the per-network metrics as evaluated, before aggregation
        raw = {"metrics": metrics, "seconds": seconds, "ceiling": ceiling_info}
        Path(f"{args.raw}.{family}.json").write_text(json.dumps(raw, default=str))
    top = metrics["ceiling"]["mean_dice"]
    ceiling_phases = "ed_es" if family is Family.LV_CT else None
    ceiling_row = _aggregate(family, site, "ceiling", args.ceiling_cases, ceiling_phases,
                             [metrics["ceiling"]], [ceiling_info["train_seconds"]],
                             top)  # fmt: skip
    rows = [ceiling_row]
    rows[0]["seeds"] = "seed-independent (seed 0)"
    arms = [(arm, cases, phases, "") for arm, cases, phases in _arms(family, args.long)]
    if select is not None:
        arms.insert(2, ("all", 5, None, "@card"))
    for arm, cases, phases, variant in arms:
        keys = [k for k in metrics
                if k.startswith(f"{arm}/{cases}/{phases}/") and k.endswith(variant or "")
                and (variant or "@card" not in k)]  # fmt: skip
        runs = [metrics[k] for k in keys]
        rows.append(_aggregate(family, site, arm, cases, phases, runs,
                               [seconds[k.removesuffix("@card")] for k in keys],
                               top))  # fmt: skip
        if arm == "base":
            rows[-1]["seeds"] = "seed-independent"
        rows[-1]["postprocessing"] = _postprocessing(card, keys, chosen, variant)
        print(json.dumps(rows[-1]), flush=True)
    if select is not None:
        rows[0]["postprocessing"] = _postprocessing(card, ["ceiling"], chosen, "")
    return rows, ceiling_info


def _postprocessing(card, keys: list[str], chosen: dict, variant: str) -> str | None:
    """How a row's lesion masks were cleaned: the sizes chosen per seed, or the card's."""
    if card_min_component(card) is None:
        return None
    sizes = [chosen[k] for k in keys if k in chosen and not variant]
    if not sizes:
        return f"card's {card_min_component(card)} mL"
    return "chosen " + ", ".join(f"{size} mL" for size in sizes)


def _pm(mean, sd, digits: int = 3) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" if not sd else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| family | site | arm | cases | labelled phases | Dice per label | mean Dice "
        "| of ceiling | family metrics |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        dice = ", ".join(f"{k} {_pm(v, r['dice_sd'][k])}" for k, v in r["dice"].items())
        extra = ""
        if "thickness_agreement" in r:
            a = r["thickness_agreement"]
            extra = "; ".join(
                f"{key.replace('_', ' ')} r {_pm(a[key]['pearson_r'], a[key]['pearson_r_sd'], 2)}"
                f" bias {_pm(a[key]['bias_mm'], a[key]['bias_mm_sd'], 2)} mm"
                for key in ("ed_median", "ed_p95", "ed_max", "es_median", "es_p95", "es_max")
            )
        elif "wmh" in r:
            w, s = r["wmh"], r["wmh_sd"]
            volume = _pm(w["volume_difference_ml"], s["volume_difference_ml"], 2)
            extra = (
                f"lesion Dice {_pm(w['dice'], s['dice'])}, lesion F1 "
                f"{_pm(w['lesion_f1'], s['lesion_f1'], 2)}, "
                f"HD95 {_pm(w['hd95_mm'], s['hd95_mm'], 1)} mm, volume error {volume} mL, "
                "volume Spearman "
                f"{_pm(r['lesion_volume_spearman'], r['lesion_volume_spearman_sd'], 2)}"
                f"; components kept from: {r.get('postprocessing') or '-'}"
            )
        lines.append(
            f"| {r['family']} | {r['site']} | {r['arm']} | {r['n_cases'] or '-'} "
            f"| {r['phases'] or '-'} | {dice} | {_pm(r['mean_dice'], r['mean_dice_sd'])} "
            f"| {_pm(r['of_ceiling'], r['of_ceiling_sd'], 2)} | {extra} |"
        )
    return "\n".join(lines) + "\n"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--long", action="store_true", help="the job's budget, more cases")
    parser.add_argument("--epochs", type=int, default=None, help="every arm (else BUDGETS)")
    parser.add_argument("--iterations", type=int, default=None, help="per epoch, every arm")
    parser.add_argument("--held-out", type=int, default=None, help="held-out cases (else HELD_OUT)")
    parser.add_argument("--select", type=int, default=SELECT_CASES,
                        help="cases lesion models choose post-processing on")  # fmt: skip
    parser.add_argument("--ceiling-cases", type=int, default=40)
    parser.add_argument("--ceiling-epochs", type=int, default=CEILING["epochs"],
                        help="ceiling epochs (of 25 iterations)")  # fmt: skip
    parser.add_argument("--ceiling-cache", default=None, help="folder keeping ceiling weights")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cardiac-site", default="C")
    parser.add_argument(
        "--families", nargs="+", default=[f.value for f in (Family.LV_CT, Family.FLAIR_LESION)]
    )
    parser.add_argument("--out", default="bench/results/transfer.json")
    parser.add_argument("--raw", default=None, help="also write per-network metrics here")
    parser.add_argument("--update", action="store_true",
                        help="replace only these families' rows in --out")  # fmt: skip
    args = parser.parse_args()
    if args.ceiling_cases < 40:
        parser.error(f"--ceiling-cases must be >= 40, got {args.ceiling_cases}")
    if args.long:
        for name, value in LONG.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    return args


def _updated(old: dict, new: dict, families: list[str]) -> dict:
    """``old``'s table with the rows (and per-family settings) of ``families`` replaced by
    ``new``'s: one family re-run, the others' rows kept as they were measured."""
    rows = [r for r in old["rows"] if r["family"] not in families] + new["rows"]
    settings = dict(old["settings"])
    for key, value in new["settings"].items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key] = settings[key] | value
        else:
            settings[key] = value
    seconds = old.get("seconds_by_family", {}) | new["seconds_by_family"]
    runs = old.get("runs", [{"families": sorted({r["family"] for r in old["rows"]}),
                             "seconds": old["seconds"]}])  # fmt: skip
    return new | {"settings": settings, "seconds_by_family": seconds, "rows": rows,
                  "runs": [*runs, {"families": families, "seconds": new["seconds"]}]}  # fmt: skip


def main() -> None:
    args = _arguments()
    started = time.perf_counter()
    rows, ceilings, seconds = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            family_started = time.perf_counter()
            family_rows, ceilings[family] = run_family(Family(family), args, Path(tmp))
            seconds[family] = round(time.perf_counter() - family_started, 1)
            rows += family_rows
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {
            "long": args.long,
            "held_out_cases": {f: held_out_cases(Family(f), args) for f in args.families},
            "select_cases": args.select,  # lesion models' post-processing chosen on
            "seeds": args.seeds,
            "sites": {f: target_site(Family(f), args) for f in args.families},
            "ceiling": ceilings,
            "recipe": {  # per family: the fine-tune arms' and the scratch arm's configs
                f: {
                    s: arm_config(Family(f), Strategy(s), 0, args).model_dump(
                        mode="json",
                        exclude={
                            "seed",
                            "strategy",
                            "val_cases",
                            "auto_promote",
                            "promote_margin",
                            "val_fraction",
                        },
                    )
                    for s in ("all", "scratch")
                }
                for f in args.families
            },
        },
        "seconds": round(time.perf_counter() - started, 1),
        "seconds_by_family": seconds,
        "rows": rows,
    }
    out = Path(args.out)
    if args.update and out.is_file():
        result = _updated(json.loads(out.read_text()), result, args.families)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result["rows"]))
    print(markdown(result["rows"]))
    print(f"total {result['seconds']} s")


if __name__ == "__main__":
    main()
