"""Train the built-in base models on site-A phantoms (reproducible, CPU).

    python -m sitetune.training.base --family lv-ct --out sitetune/models/builtin/lv-ct

Writes ``weights.pt`` (state dict) and ``card.json`` whose metrics hold Dice (and, for
lesions, lesion-wise F1) on held-out site-A and site-B phantoms. The committed built-in
weights were produced by this command with its defaults: ``--augment`` is the family's
`BASE_AUGMENT` (``contrast`` for ``lv-ct``: only the contrast enhancement varied, which
keeps the base's wall thickness right under another site's bolus timing; ``none`` for
``flair-lesion``); ``light`` or ``site_shift`` train with the fine-tune recipe's
augmentation instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from sitetune.imaging.phantoms.cardiac import cardiac_phantom
from sitetune.imaging.phantoms.dataset import DatasetSpec, case_seed, generate_case
from sitetune.imaging.phantoms.sites import Family
from sitetune.measure.metrics import dice_per_label, lesion_detection
from sitetune.models.card import ModelCard, Provenance
from sitetune.models.engines import TorchEngine
from sitetune.models.inference import InferenceSettings, segment_frame
from sitetune.models.networks import build_network
from sitetune.models.preprocess import labels_to_network_grid, to_network_grid
from sitetune.training.augment import Augment, AugmentSpec
from sitetune.training.loop import TrainConfig, TrainingCase, train

logger = logging.getLogger(__name__)

_UNET = {
    "architecture": "UNet",
    "params": {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1},
}

BASE_CARDS: dict[Family, ModelCard] = {
    Family.LV_CT: ModelCard(
        name="lv-ct",
        modality="CT",
        description="Left-ventricle blood pool and myocardium in cardiac CT (3D or 4D).",
        labels=[
            {"value": 1, "name": "LV blood pool", "keep_largest_component": True},
            {"value": 2, "name": "LV myocardium", "keep_largest_component": True},
        ],
        spacing_mm=(1.5, 1.5, 1.5),
        intensity={"kind": "window", "low": -200, "high": 600},
        patch_size=(64, 64, 64),
        network=_UNET,
    ),
    Family.FLAIR_LESION: ModelCard(
        name="flair-lesion",
        modality="MR",
        description="White-matter lesions in brain FLAIR MRI.",
        labels=[{"value": 1, "name": "lesion", "min_component_ml": 0.01}],
        spacing_mm=(1.2, 1.2, 1.2),
        intensity={"kind": "zscore"},
        patch_size=(64, 64, 64),
        network=_UNET,
        # measured in bench/transfer.py: site_shift's heavy augmentation keeps a lesion
        # model below its in-domain ceiling at the standard budget, light does not; a
        # fifth of the patches on lesions makes fewer small false positives than half
        fine_tune={"augment": "light", "learning_rate": 3e-4, "foreground_fraction": 0.2},
    ),
}

# measured in bench/thickness_agreement.py (README, Measured): without it the lv-ct base
# draws site B's late-bolus walls 7 % too thick (ED max +1.41 mm); with it +0.25 mm
BASE_AUGMENT = {Family.LV_CT: Augment.CONTRAST, Family.FLAIR_LESION: Augment.NONE}

TRAIN_PHASES = 5  # cardiac frames at 0, 20, 40 (ES), 60, 80 % of the cycle
EVAL_PHASES = (0, 2)  # ED and ES frames of a 5-phase phantom


def _frames(family: Family, site: str, seed: int, index: int, phases: int, vary_fov: bool = False):
    """(image, labels, affine) per frame of one phantom.

    ``vary_fov`` (training): cardiac fields of view from 128 to 240 mm, so the model
    also sees lung and chest wall around the heart, as in full-size CCTA.
    """
    spec = DatasetSpec(family, site, index + 1, phases=phases, seed=seed)
    if family == Family.LV_CT and vary_fov:
        rng = np.random.default_rng([seed, index])
        fov = tuple(float(v) for v in rng.uniform(128.0, 240.0, 3) * [1.0, 1.0, 0.85])
        case = cardiac_phantom(case_seed(spec, index), site, phases=phases, fov_mm=fov)
    else:
        case = generate_case(spec, index)
    volume, labels = case.image, case.labels
    return [
        (volume.phase(t).array, labels.phase(t).array, volume.affine)
        for t in range(volume.n_phases)
    ]


def _prepare(args) -> list[TrainingCase]:
    family, site, seed, index, card_json = args
    card = ModelCard.model_validate_json(card_json)
    phases = TRAIN_PHASES if family == Family.LV_CT else 1
    out = []
    for image, labels, affine in _frames(family, site, seed, index, phases, vary_fov=True):
        tensor, _ = to_network_grid(image, affine, card)
        out.append(TrainingCase(tensor, labels_to_network_grid(labels, affine, card)))
    return out


def training_cases(
    card: ModelCard, family: Family, site: str, n_cases: int, seed: int, workers: int
) -> list[TrainingCase]:
    """Generate and preprocess ``n_cases`` phantoms (every training frame of each)."""
    jobs = [(family, site, seed, i, card.model_dump_json()) for i in range(n_cases)]
    with ProcessPoolExecutor(workers) as pool:
        return [c for cases in pool.map(_prepare, jobs) for c in cases]


def evaluate(
    card: ModelCard,
    network: torch.nn.Module,
    family: Family,
    site: str,
    n_cases: int,
    seed: int,
    vary_fov: bool = False,
) -> dict:
    """Mean Dice per label (and lesion F1) over ``n_cases`` held-out phantoms of ``site``."""
    engine = TorchEngine(network)
    settings = InferenceSettings()
    scores: dict[str, list[float]] = {}
    for index in range(n_cases):
        frames = _frames(
            family, site, seed, index, TRAIN_PHASES if family == Family.LV_CT else 1, vary_fov
        )
        chosen = [frames[t] for t in EVAL_PHASES] if family == Family.LV_CT else frames
        for image, reference, affine in chosen:
            predicted = segment_frame(image, affine, card, engine, settings, {})
            for name, value in dice_per_label(predicted, reference, card.label_names).items():
                scores.setdefault(f"dice/{name}", []).append(value)
            if family == Family.FLAIR_LESION:
                detection = lesion_detection(predicted == 1, reference == 1)
                scores.setdefault("lesion_f1", []).append(detection["f1"])
    return {key: round(float(np.mean(values)), 4) for key, values in scores.items()} | {
        "cases": n_cases,
        "site": site,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train a built-in base model on site-A phantoms.")
    parser.add_argument("--family", required=True, choices=[f.value for f in Family])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--cases", type=int, default=40, help="site-A training phantoms")
    parser.add_argument("--eval-cases", type=int, default=10, help="held-out phantoms per site")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--iterations", type=int, default=25, help="iterations per epoch")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--augment",
        default=None,
        choices=[a.value for a in Augment],
        help="training augmentation (default: the family's, as the committed weights)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="re-evaluate the weights already in --out and rewrite its card",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    family = Family(args.family)
    card = BASE_CARDS[family]
    network = build_network(card)
    if args.evaluate_only:
        network.load_state_dict(torch.load(args.out / "weights.pt", weights_only=True))
        provenance = ModelCard.model_validate_json((args.out / "card.json").read_text()).provenance
    else:
        # Train on patches of exactly the inference window: with instance normalisation
        # the network's output depends on the window it sees.
        config = TrainConfig(
            epochs=args.epochs,
            iterations_per_epoch=args.iterations,
            learning_rate=args.learning_rate,
            seed=args.seed,
            patch_size=card.patch_size,
            augment=AugmentSpec.for_card(card, args.augment or BASE_AUGMENT[family]),
        )
        started = time.perf_counter()
        cases = training_cases(
            card, family, "A", args.cases, seed=1000 + args.seed, workers=args.threads
        )
        logger.info(
            "prepared %d training frames in %.0f s", len(cases), time.perf_counter() - started
        )
        torch.manual_seed(args.seed)
        network = build_network(card)

        def on_epoch(epoch: int, loss: float, seconds: float) -> None:
            logger.info("epoch %d/%d loss %.4f (%.0f s)", epoch, config.epochs, loss, seconds)

        train(network, cases, config, on_epoch=on_epoch)
        provenance = Provenance(
            dataset_fingerprint=f"phantoms:{family}:A:seed{1000 + args.seed}:n{args.cases}",
            training=config.as_dict()
            | {"cases": args.cases, "seconds": round(time.perf_counter() - started)},
            created_by="sitetune.training.base",
        )
    metrics = {
        f"site_{site}": evaluate(
            card, network, family, site, args.eval_cases, seed=2000 + args.seed
        )
        for site in ("A", "B")
    }
    if family == Family.LV_CT:  # fields of view of 128-240 mm, as in full-size CCTA
        metrics["site_A_wide_fov"] = evaluate(
            card, network, family, "A", args.eval_cases, seed=2000 + args.seed, vary_fov=True
        )
    logger.info("metrics %s", json.dumps(metrics))
    trained = card.model_copy(update={"metrics": metrics, "provenance": provenance})
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.evaluate_only:
        torch.save(network.state_dict(), args.out / "weights.pt")
    (args.out / "card.json").write_text(trained.model_dump_json(indent=2) + "\n")
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
