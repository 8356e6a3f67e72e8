"""Production against candidate on the same held-out site cases.

Every held-out case is segmented by each network, frame by labelled frame, exactly as the
service segments (`segment_frame` on the case's own grid, with the deployment's sliding-
window settings), and measured as the analysis pipeline measures: which measurement, and
which label value is which structure, follow from the card's coded labels
(`sitetune.analysis.tasks`). Reported per network:

- Dice per label (mean over frames) and their mean, the gate's score; the same per case
  (``cases``, in the order of the held-out cases), which `paired_comparison` pairs;
- ``lv-ct``: thickness agreement with the reference masks (Pearson r, bias and mean
  absolute difference of median, p95 and max at ED and ES: `thickness_agreement`; a case
  where a network finds no myocardium is counted in ``cases_without_myocardium``), and the
  mean absolute blood-pool and myocardium volume errors in mL;
- ``flair-lesion``: the WMH challenge metrics (`wmh_metrics`, averaged over the cases where
  defined), the mean absolute total-volume error in mL and the Spearman correlation of
  predicted with reference lesion volume (`volume_spearman`).

The promotion gate judges these metrics: `sitetune.training.promotion`.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from sitetune.analysis.tasks import Task, measured_task, to_measured_labels
from sitetune.errors import InvalidInput
from sitetune.imaging.load import load_volume
from sitetune.measure.metrics import dice_per_label, mean_metrics, wmh_metrics
from sitetune.measure.ventricle import measure_ventricle, thickness_agreement
from sitetune.models.card import ModelCard
from sitetune.models.engines import OrtEngine, TorchEngine
from sitetune.models.export import export_onnx
from sitetune.models.inference import InferenceSettings, segment_frame
from sitetune.training.datasets import SiteCase

logger = logging.getLogger(__name__)


def _is_lv(card: ModelCard) -> bool:
    """The card's coded labels serve the wall thickness (as the service decides it)."""
    return measured_task(card) is Task.WALL_THICKNESS


def _is_lesion(card: ModelCard) -> bool:
    return measured_task(card) is Task.LESION_VOLUME


def _lv(labels: np.ndarray, card: ModelCard) -> np.ndarray:
    return to_measured_labels(labels, card, Task.WALL_THICKNESS)


def evaluate_networks(
    cases: list[SiteCase],
    card: ModelCard,
    networks: dict[str, torch.nn.Module],
    *,
    device: str = "cpu",
    should_stop: Callable[[], bool] | None = None,
    settings: InferenceSettings | None = None,
    cards: Mapping[str, ModelCard] | None = None,
) -> dict[str, dict]:
    """Metrics of each named network on the same ``cases`` (see the module docstring),
    segmented with the deployment's sliding-window ``settings`` (overlap, batch), so the
    gate judges what the service will serve. ``cards``: a network's own card where its
    post-processing differs from ``card``'s (a candidate's chosen lesion size, or a
    production version's); the labels are ``card``'s for all."""
    cards = dict(cards or {})
    with tempfile.TemporaryDirectory() as tmp:
        engines = {
            name: network_engine(network, cards.get(name, card), device, Path(tmp) / f"{i}.onnx")
            for i, (name, network) in enumerate(networks.items())
        }
        return _evaluate(cases, card, cards, networks, engines, should_stop, settings)


def network_engine(network: torch.nn.Module, card: ModelCard, device: str, onnx_path: Path):
    """How the service would run it: ONNX Runtime on the CPU (2-3x faster than torch
    eager there), torch on a GPU."""
    if torch.device(device).type != "cpu":
        return TorchEngine(network, device)
    export_onnx(copy.deepcopy(network), card, onnx_path, check_batches=1)
    return OrtEngine(onnx_path, providers=["CPUExecutionProvider"])


def _evaluate(cases, card, cards, networks, engines, should_stop, settings) -> dict[str, dict]:
    settings = settings or InferenceSettings()
    dice: dict[str, dict[str, list[float]]] = {name: {} for name in networks}
    volume_errors: dict[str, dict[str, list[float]]] = {name: {} for name in networks}
    reports: dict[str, list] = {name: [] for name in networks}  # (predicted, reference)
    unmeasured = dict.fromkeys(networks, 0)
    lesion_rows: dict[str, list[dict]] = {name: [] for name in networks}
    per_case: dict[str, list[dict]] = {name: [] for name in networks}  # in the order of cases
    for number, case in enumerate(cases, 1):  # numbers, not names (often MRNs), in logs
        image, labels = load_volume(case.image), load_volume(case.label)
        voxel_ml = labels.voxel_volume_ml
        predicted = {name: np.zeros(labels.array.shape, np.uint8) for name in networks}
        case_dice: dict[str, dict[str, list[float]]] = {name: {} for name in networks}
        for t in case.labelled_phases:
            if should_stop is not None and should_stop():
                raise InterruptedError("evaluation stopped")
            reference = labels.phase(t).array.astype(np.uint8)
            for name, engine in engines.items():
                frame = segment_frame(image.phase(t).array, image.affine,
                                      cards.get(name, card), engine, settings, {})  # fmt: skip
                if labels.array.ndim == 4:
                    predicted[name][..., t] = frame
                else:
                    predicted[name] = frame
                for label, value in dice_per_label(frame, reference, card.label_names).items():
                    dice[name].setdefault(label, []).append(value)
                    case_dice[name].setdefault(label, []).append(value)
                for value, label in card.label_names.items():
                    error = abs(int((frame == value).sum()) - int((reference == value).sum()))
                    volume_errors[name].setdefault(label, []).append(error * voxel_ml)
                if _is_lesion(card):
                    found, truth = (to_measured_labels(x, card, Task.LESION_VOLUME) == 1
                                    for x in (frame, reference))  # fmt: skip
                    lesion_rows[name].append(wmh_metrics(found, truth, labels.affine))
        for name in networks:
            case_labels = {k: round(float(np.mean(v)), 4) for k, v in case_dice[name].items()}
            mean = round(float(np.mean(list(case_labels.values()))), 4) if case_labels else None
            per_case[name].append({"dice": case_labels, "mean_dice": mean})
        if _is_lv(card):
            try:
                reference_report = measure_ventricle(
                    _lv(labels.array.astype(np.uint8), card), labels.affine, image.phases
                )
            except InvalidInput as exc:
                logger.info("held-out case %d has no measurable reference: %s", number, exc)
                continue
            for name in networks:
                try:  # e.g. a network that found no myocardium: left out for that network
                    report = measure_ventricle(_lv(predicted[name], card), labels.affine,
                                               image.phases)  # fmt: skip
                except InvalidInput as exc:
                    logger.info("held-out case %d, %s: no thickness (%s)", number, name, exc)
                    unmeasured[name] += 1
                    continue
                reports[name].append((report, reference_report))
    out = {}
    for name in networks:
        per_label = {label: round(float(np.mean(v)), 4) for label, v in dice[name].items()}
        entry: dict = {
            "dice": per_label,
            "mean_dice": round(float(np.mean(list(per_label.values()))), 4),
            "volume_abs_error_ml": {
                label: round(float(np.mean(v)), 3) for label, v in volume_errors[name].items()
            },
            "cases": per_case[name],  # per held-out case (labelled phases averaged)
        }
        if _is_lv(card) and reports[name]:
            predicted_reports, reference_reports = zip(*reports[name], strict=True)
            entry["thickness_agreement"] = thickness_agreement(predicted_reports, reference_reports)
            entry["thickness_agreement"]["cases_without_myocardium"] = unmeasured[name]
        if _is_lesion(card) and lesion_rows[name]:
            entry["wmh"] = {
                key: {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}
                for key, stats in mean_metrics(lesion_rows[name]).items()
            }
            entry["lesion_volume_spearman"] = volume_spearman(lesion_rows[name])
        out[name] = entry
    return out


def volume_spearman(rows: list[dict]) -> float | None:
    """Spearman's rank correlation of predicted with reference lesion volume over the
    held-out frames (`wmh_metrics` rows): does the model order patients by lesion load as
    the reference does? None with fewer than 3 frames or a constant side."""
    predicted = [r["predicted_ml"] for r in rows]
    reference = [r["reference_ml"] for r in rows]
    if len(rows) < 3 or len(set(predicted)) < 2 or len(set(reference)) < 2:
        return None
    return round(float(spearmanr(predicted, reference).statistic), 4)


def paired_comparison(candidate: dict, production: dict, case_refs: list[str]) -> dict:
    """Candidate against production case by case (both from `evaluate_networks` on the
    same held-out cases): each case's mean Dice for both and the paired difference, worst
    first, and the mean and sd of the differences with the count of cases better, worse
    and tied (within 0.001). What the console shows beside the gate's decision."""
    rows = []
    for ref, ours, theirs in zip(case_refs, candidate.get("cases", []),
                                 production.get("cases", []), strict=False):  # fmt: skip
        a, b = ours["mean_dice"], theirs["mean_dice"]
        difference = None if a is None or b is None else round(a - b, 4)
        dice = {"candidate": ours["dice"], "production": theirs["dice"]}
        rows.append({"case": ref, "candidate": a, "production": b, "difference": difference,
                     "dice": dice})  # fmt: skip
    rows.sort(key=lambda r: (r["difference"] is None, r["difference"] or 0.0))
    differences = np.array([r["difference"] for r in rows if r["difference"] is not None])
    return {
        "cases": rows,
        "mean_difference": round(float(differences.mean()), 4) if differences.size else None,
        "sd_difference": round(float(differences.std(ddof=1)), 4) if differences.size > 1 else None,
        "better": int((differences > 0.001).sum()),
        "worse": int((differences < -0.001).sum()),
        "tied": int((np.abs(differences) <= 0.001).sum()),
    }
