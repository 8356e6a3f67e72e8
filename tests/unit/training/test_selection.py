"""Checkpoint selection and early stopping in the fine-tune job's training (the job
runner's own ``_train``) on a tiny case: the weights kept are those of the best held-out
epoch, training stops after ``patience`` epochs without a better one, and the report says
which epoch was kept and why."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
import torch

from sitetune.models.builtin import load_builtin
from sitetune.training import worker as worker_module
from sitetune.training.datasets import SiteCase
from sitetune.training.finetune import FineTuneConfig
from sitetune.training.loop import Trainer
from sitetune.training.worker import JobRunner
from tests.unit.training.tiny import tiny_cases


class _Beats:
    """What ``_train`` needs of the job's heartbeat: progress, beats, a cancel flag."""

    def __init__(self) -> None:
        self.progress: dict | None = None
        self.cancelled = threading.Event()

    def beat(self) -> None:
        pass  # the real one writes progress to the job row


@pytest.fixture
def tiny_job(monkeypatch, tmp_path):
    """The built-in lv-ct network on 16³ patches, two tiny training cases and one held-out
    case (loaded without files: the case loader is what is replaced, nothing else)."""
    card, network = load_builtin("lv-ct")
    card = card.model_copy(update={"patch_size": (16, 16, 16)})
    values = tuple(card.label_names)
    tiny = {f"c{i}": case for i, case in enumerate(tiny_cases(values, 3))}
    monkeypatch.setattr(
        worker_module, "training_cases", lambda cases, _card: [tiny[c.name] for c in cases]
    )
    cases = [SiteCase(name, Path("i"), Path("l"), (0,)) for name in tiny]
    runner = JobRunner(None, None, "test-worker")  # _train touches neither store nor registry
    runner.device = "cpu"
    return runner, card, network, cases[:2], cases[2:], tmp_path


def _run(tiny_job, config: FineTuneConfig):
    runner, card, network, train, held_out, folder = tiny_job
    beats = _Beats()
    history, report = runner._train(
        network, card, config, train, held_out, folder, beats, logging.getLogger("test")
    )
    return network, history, report, beats


def test_scripted_scores_keep_the_best_epoch_and_stop_after_patience(tiny_job, monkeypatch):
    scores = iter([0.0, 0.2, 0.5, 0.4, 0.45, 0.9])  # the first: the estimate's probe
    weights_after: dict[int, dict] = {}
    run_epoch, validate = Trainer.run_epoch, Trainer.validate

    def recording_run_epoch(self, *args, **kwargs):
        loss = run_epoch(self, *args, **kwargs)
        weights_after[self.epoch] = {k: v.clone() for k, v in self.network.state_dict().items()}
        return loss

    def scripted_validate(self, patches):
        real = validate(self, patches)  # the real pass runs; its score is replaced
        return {"loss": real["loss"], "dice": [next(scores)] * len(real["dice"])}

    monkeypatch.setattr(Trainer, "run_epoch", recording_run_epoch)
    monkeypatch.setattr(Trainer, "validate", scripted_validate)
    config = FineTuneConfig(epochs=8, iterations_per_epoch=1, batch_size=1, patience=2)
    network, history, report, beats = _run(tiny_job, config)
    # epoch 2 scores 0.5; epochs 3 and 4 are no better: stop after 4, never reach 0.9
    assert report["epochs_run"] == 4 and len(history) == 4
    assert report["kept_epoch"] == 2 and report["kept_because"].startswith(
        "highest mean held-out Dice (0.5000)"
    )
    assert report["stopped_by"] == "early stop: no better held-out Dice for 2 epochs"
    kept = network.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in weights_after[2].items())
    assert any(not torch.equal(kept[k], v) for k, v in weights_after[4].items())
    assert beats.progress["best_epoch"] == 2
    assert [e for e, _ in beats.progress["val_mean_dice"]] == [1, 2, 3, 4]


def test_without_patience_every_epoch_runs_and_the_best_real_epoch_is_kept(tiny_job):
    config = FineTuneConfig(epochs=3, iterations_per_epoch=2, batch_size=1, seed=5)
    network, history, report, beats = _run(tiny_job, config)
    assert report["epochs_run"] == len(history) == 3 and report["stopped_by"] == "the last epoch"
    curve = dict(beats.progress["val_mean_dice"])  # epoch -> held-out Dice (4 decimals)
    best_epoch = report["kept_epoch"]
    assert best_epoch == beats.progress["best_epoch"] and sorted(curve) == [1, 2, 3]
    assert curve[best_epoch] == max(curve.values())
    assert f"({curve[best_epoch]:.4f})" in report["kept_because"]
    assert report["estimate"]["iterations"] == 6 and report["estimate"]["training_s"] > 0
    best = torch.load(tiny_job[5] / "best.pt", weights_only=True)
    assert best["epoch"] == best_epoch
    kept = network.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in best["network"].items())
