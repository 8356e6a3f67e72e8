"""The fine-tune worker: a process apart from the HTTP workers that runs queued jobs.

    sitetune-worker               # run jobs until stopped (several may share one database)
    sitetune-worker --supervise   # ... and restart the worker if it dies (what the serve
                                  # command starts on the embedded defaults)

A job: load the base version, validate the dataset again, split it, apply the strategy,
train with a checkpoint after every epoch (a restarted job resumes from it), evaluate
production and the candidate on the held-out cases, register the candidate (alias
``candidate``, lineage and evaluation in its card) and, with ``auto_promote``, promote it
when the gate passes. A heartbeat thread keeps the row alive and watches for a cancel
request; cancelling stops training within one iteration and registers nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sitetune.errors import InvalidInput, SitetuneError
from sitetune.models.importing import load_torch_network, register_weights
from sitetune.models.registry import CANDIDATE, Registry
from sitetune.models.serving import InferenceSettings
from sitetune.processes import worker_identity, worker_main
from sitetune.settings import Settings
from sitetune.stores import Stores
from sitetune.training.datasets import case_refs, dataset_root, validate_site_dataset
from sitetune.training.evaluation import evaluate_networks, paired_comparison
from sitetune.training.finetune import (
    FineTuneConfig,
    apply_strategy,
    split_cases,
    training_cases,
)
from sitetune.training.jobs import Job, JobState, JobStore
from sitetune.training.loop import Trainer, optimiser_and_schedule, validation_patches
from sitetune.training.postprocessing import choose_min_component, with_min_component
from sitetune.training.promotion import decide_promotion, held_out_gate

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0


class Cancelled(Exception):
    """The job was cancelled while it ran."""


def torch_device() -> str:
    return "cuda:0" if torch.cuda.is_available() else "cpu"


class _Heartbeat(threading.Thread):
    """Beats for one job every few seconds, publishes progress, notices cancellation."""

    def __init__(self, store: JobStore, job_id: str, worker: str) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id[:8]}")
        self.store, self.job_id, self.worker = store, job_id, worker
        self.cancelled = threading.Event()  # stop: cancel asked, or the job taken over
        self.done = threading.Event()
        self.progress: dict | None = None

    def beat(self) -> None:
        if self.store.heartbeat(self.job_id, self.worker, self.progress):
            self.cancelled.set()

    def still_held(self) -> bool:
        """Beat now: whether this worker may still act for the job (register a version)."""
        self.beat()
        return not self.cancelled.is_set()

    def run(self) -> None:
        while not self.done.wait(HEARTBEAT_SECONDS):
            try:
                self.beat()
            except Exception:  # a database hiccup must not kill the job
                logger.exception("heartbeat failed")


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(partial)`` to ``path``'s ``.partial`` sibling, then rename it over ``path``:
    a worker resuming after a kill finds the old file or the new one, never half of one."""
    partial = path.with_suffix(".partial")
    write(partial)
    partial.replace(path)


def _seconds_per_iteration(trainer: Trainer, iterations: int = 2) -> float:
    """The measured cost of one training iteration on this device: a copy of the trainer
    runs ``iterations`` (after one warm-up), torch's random state kept, so the job's own
    training is exactly what it would be without the probe."""
    probe = copy.copy(trainer)  # shares the cases (they may be large), copies the rest
    probe.network = copy.deepcopy(trainer.network)
    probe.optimiser, probe.schedule = optimiser_and_schedule(probe.network, trainer.config)
    probe.rng, probe.history = copy.deepcopy(trainer.rng), list(trainer.history)
    probe.config = dataclasses.replace(probe.config, iterations_per_epoch=1)
    devices = [trainer.device] if trainer.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        probe.run_epoch()
        probe.config = dataclasses.replace(probe.config, iterations_per_epoch=iterations)
        started = time.perf_counter()
        probe.run_epoch()
        return (time.perf_counter() - started) / iterations


class JobRunner:
    """Runs one claimed job to a terminal state."""

    def __init__(
        self,
        store: JobStore,
        registry: Registry,
        worker: str,
        inference: InferenceSettings | None = None,
    ) -> None:
        self.store, self.registry, self.worker = store, registry, worker
        self.device = torch_device()
        self.inference = inference or InferenceSettings()  # the deployment's, for evaluation

    def run(self, job: Job) -> Job:
        folder = self.store.folder(job.id)
        handler = logging.FileHandler(self.store.log_path(job.id))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        job_logger = logging.getLogger("sitetune.job")
        job_logger.addHandler(handler)
        job_logger.setLevel(logging.INFO)
        heartbeat = _Heartbeat(self.store, job.id, self.worker)
        heartbeat.start()
        try:
            result = self._run(job, folder, heartbeat, job_logger)
            state, error = JobState.SUCCEEDED, None
        except Cancelled:
            owner = self.store.get(job.id).worker
            if owner != self.worker:
                job_logger.info("taken over by %s after a stall; stopped, nothing registered",
                                owner)  # fmt: skip
            else:
                job_logger.info("cancelled; nothing registered")
            result, state, error = None, JobState.CANCELLED, None
        except SitetuneError as exc:
            job_logger.error("failed: %s", exc.message)
            result, state, error = None, JobState.FAILED, exc.message
        except Exception as exc:
            job_logger.error("failed:\n%s", traceback.format_exc())
            result, state, error = None, JobState.FAILED, f"{type(exc).__name__}: {exc}"
        finally:
            heartbeat.done.set()
            heartbeat.join()
            job_logger.removeHandler(handler)
            handler.close()
        return self.store.finish(job.id, self.worker, state, result=result, error=error)

    def _run(self, job: Job, folder: Path, heartbeat: _Heartbeat, log: logging.Logger) -> dict:
        config = FineTuneConfig.model_validate(job.config)
        base = self.registry.resolve(job.base)
        card = base.card
        log.info(
            "job %s (attempt %d) on %s: base %s, %s",
            job.id,
            job.attempts,
            self.device,
            base.ref,
            json.dumps(config.model_dump(mode="json")),
        )
        network = load_torch_network(base)
        if network is None or isinstance(network, torch.jit.ScriptModule):
            raise InvalidInput(
                f"base {base.ref} has no torch state dict to fine-tune (ONNX or TorchScript only)"
            )
        dataset = validate_site_dataset(dataset_root(folder / "dataset"), card)
        train_cases, held_out = split_cases(dataset, config)
        refs = case_refs(dataset)  # never case names (often MRNs) in logs or cards
        log.info(
            "training cases %s; held out %s",
            [refs[c.name] for c in train_cases],
            [refs[c.name] for c in held_out],
        )
        strategy = apply_strategy(network, config.strategy, config.seed)
        log.info(
            "strategy %s: %d of %d parameters trainable",
            strategy["strategy"],
            strategy["trainable_parameters"],
            strategy["parameters"],
        )
        history, training = self._train(
            network, card, config, train_cases, held_out, folder, heartbeat, log
        )
        heartbeat.progress = {**(heartbeat.progress or {}), "stage": "evaluating", "eta_s": None}
        heartbeat.beat()
        try:  # both stop within a frame when the job is cancelled
            choice = choose_min_component(held_out, card, network, device=self.device,
                                          settings=self.inference,
                                          should_stop=heartbeat.cancelled.is_set)  # fmt: skip
            if choice is not None:
                log.info("lesion components kept from %s mL: %s", choice["min_component_ml"],
                         choice["because"])  # fmt: skip
                card = with_min_component(card, choice["min_component_ml"])
            evaluation = self._evaluate(network, card, config, train_cases, held_out, heartbeat,
                                        refs)  # fmt: skip
        except InterruptedError as exc:
            raise Cancelled from exc
        if choice is not None:
            evaluation["postprocessing"] = choice
        log.info("evaluation: %s", json.dumps(evaluation))
        heartbeat.progress = {**heartbeat.progress, "stage": "registering"}
        if not heartbeat.still_held():  # a job taken over registers nothing here
            raise Cancelled
        version = self._register(
            job, card, base.ref, dataset.fingerprint, config, strategy, history, evaluation,
            network, folder,
        )  # fmt: skip
        log.info("registered %s (alias %s)", version.ref, CANDIDATE)
        promoted, promotion = self._auto_promote(job, version, config, log)
        return {
            "version": version.version,
            "ref": version.ref,
            "training": training,
            "evaluation": evaluation,
            "promoted": promoted,
            "promotion": promotion,
        }

    def _train(self, network, card, config, train_cases, held_out, folder, heartbeat, log):
        """Train with a checkpoint after every epoch (resuming from one if present), keep
        the epoch whose weights scored best on the held-out patches (mean Dice), stop
        early after ``patience`` epochs without a better one or when ``time_limit_s``
        would be passed; returns the loss history and a report of the estimate, the
        kept epoch and why training stopped."""
        network.to(self.device)
        trainer = Trainer(network, training_cases(train_cases, card), config.train_config(card))
        patches = validation_patches(
            training_cases(held_out, card), tuple(card.patch_size), config.seed
        )
        checkpoint, best_path = folder / "checkpoint.pt", folder / "best.pt"
        if checkpoint.is_file():
            trainer.load_state_dict(torch.load(checkpoint, weights_only=True))
            log.info("resumed from the checkpoint after epoch %d", trainer.epoch)
        best = torch.load(best_path, weights_only=True) if best_path.is_file() else None
        per_iteration = _seconds_per_iteration(trainer)
        started = time.perf_counter()
        trainer.validate(patches)  # eval mode, no gradient, no random draw: changes nothing
        per_validation = time.perf_counter() - started
        epochs_left = config.epochs - trainer.epoch
        iterations = epochs_left * config.iterations_per_epoch
        estimate = {
            "per_iteration_s": round(per_iteration, 4),
            "iterations": iterations,
            "per_validation_s": round(per_validation, 3),
            "training_s": round(per_iteration * iterations + per_validation * epochs_left, 1),
        }
        log.info("estimated training time on %s: %.0f s (%d iterations at %.3f s)",
                 self.device, estimate["training_s"], iterations, per_iteration)  # fmt: skip
        heartbeat.progress = {"stage": "training", "epoch": trainer.epoch,
                              "epochs": config.epochs, "estimate": estimate,
                              "eta_s": estimate["training_s"]}  # fmt: skip
        heartbeat.beat()
        started_training = time.perf_counter()
        epoch_seconds: list[float] = []
        stopped = "the last epoch"
        names = list(card.label_names.values())
        # [epoch, mean held-out Dice]: the console's curve, kept beside the checkpoint so
        # that a job resumed by another worker shows the epochs before it too
        curve = folder / "val_mean_dice.json"
        val_dice: list[list] = [
            point
            for point in (json.loads(curve.read_text()) if curve.is_file() else [])
            if point[0] <= trainer.epoch
        ]
        while trainer.epoch < config.epochs:
            started = time.perf_counter()
            loss = trainer.run_epoch(heartbeat.cancelled.is_set)
            if loss is None:
                raise Cancelled
            epoch_seconds.append(time.perf_counter() - started)
            validation = trainer.validate(patches)
            val = {
                "loss": round(validation["loss"], 5),
                "dice": {n: round(d, 4) for n, d in zip(names, validation["dice"], strict=True)},
            }
            score = float(np.mean(validation["dice"]))
            val_dice.append([trainer.epoch, round(score, 4)])
            _write_atomically(curve, lambda path: path.write_text(json.dumps(val_dice)))
            if best is None or score > best["score"]:
                best = {"epoch": trainer.epoch, "score": score,
                        "network": {k: v.detach().cpu().clone()
                                    for k, v in network.state_dict().items()}}  # fmt: skip
                _write_atomically(best_path, functools.partial(torch.save, best))
            # The checkpoint last: a worker killed before it redoes this epoch (the same
            # draws), and the curve's and the best's entries for it are taken again.
            _write_atomically(checkpoint, lambda path: torch.save(trainer.state_dict(), path))
            remaining = config.epochs - trainer.epoch
            mean_epoch = sum(epoch_seconds) / len(epoch_seconds)
            heartbeat.progress = {
                "epoch": trainer.epoch,
                "epochs": config.epochs,
                "train_loss": round(loss, 5),
                "losses": [round(v, 5) for v in trainer.history],
                "val": val,
                "val_mean_dice": val_dice,
                "best_epoch": best["epoch"],
                "estimate": estimate,
                "eta_s": round(remaining * mean_epoch, 1),
                "stage": "training",
            }
            heartbeat.beat()
            log.info(
                "epoch %d/%d loss %.4f val %s (%.1f s)",
                trainer.epoch,
                config.epochs,
                loss,
                json.dumps(val),
                epoch_seconds[-1],
            )
            if config.patience and trainer.epoch - best["epoch"] >= config.patience:
                stopped = f"early stop: no better held-out Dice for {config.patience} epochs"
                break
            elapsed = time.perf_counter() - started_training
            if config.time_limit_s and remaining and elapsed + mean_epoch > config.time_limit_s:
                stopped = f"time limit: another epoch would pass {config.time_limit_s:.0f} s"
                break
        if best is not None and best["epoch"] != trainer.epoch:
            network.load_state_dict(best["network"])
        kept = best["epoch"] if best is not None else trainer.epoch
        report = {
            "estimate": estimate,
            "actual_training_s": round(time.perf_counter() - started_training, 1),
            "epochs_run": trainer.epoch,
            "kept_epoch": kept,
            "kept_because": f"highest mean held-out Dice ({best['score']:.4f})"
            if best is not None else "no validation",
            "stopped_by": stopped,
        }  # fmt: skip
        log.info("kept the weights of epoch %d (%s); stopped by %s", kept,
                 report["kept_because"], stopped)  # fmt: skip
        return trainer.history, report

    def _evaluate(self, network, card, config, train_cases, held_out, heartbeat, refs) -> dict:
        """Candidate and current production on the held-out cases, and the gate."""
        production = self.registry.resolve(f"{card.name}:production")
        production_network = load_torch_network(production)
        networks = {"candidate": network.eval()}
        if production_network is not None:
            networks["production"] = production_network
        metrics = evaluate_networks(
            held_out, card, networks, device=self.device, should_stop=heartbeat.cancelled.is_set,
            settings=self.inference, cards={"production": production.card},
        )  # fmt: skip
        evaluation = {
            "held_out_cases": [refs[c.name] for c in held_out],
            "training_cases": [refs[c.name] for c in train_cases],
            "production_version": production.ref,
            "candidate": metrics["candidate"],
            "production": metrics.get("production"),
        }
        if "production" in metrics:
            gate = held_out_gate(metrics["candidate"], metrics["production"], config.promote_margin)
            evaluation["gate"] = gate.to_json()
            evaluation["paired"] = paired_comparison(
                metrics["candidate"], metrics["production"], evaluation["held_out_cases"]
            )
        return evaluation

    def _auto_promote(self, job, version, config, log) -> tuple[bool, str]:
        """Promote ``version`` when asked and the gate lets it (a passed gate required:
        `decide_promotion`); (promoted, why)."""
        if not config.auto_promote:
            return False, "auto_promote is off; promote with POST /v1/models/{name}/promote"
        decision = decide_promotion(self.registry, version.name, version.version, require_gate=True)
        if not decision.allowed:
            log.info("not promoted: %s", decision.explanation)
            return False, f"not promoted: {decision.explanation}"
        self.registry.promote(
            version.name,
            version.version,
            actor=f"job:{job.id}",
            reason=f"auto-promoted by job {job.id}: {decision.explanation}",
        )
        log.info("promoted %s to production", version.ref)
        return True, decision.explanation

    def _register(
        self, job, card, parent, fingerprint, config, strategy, history, evaluation, network, folder
    ):
        provenance = card.provenance.model_copy(
            update={
                "parent": parent,
                "dataset_fingerprint": fingerprint,
                "training": {
                    **config.model_dump(mode="json", exclude={"val_cases"}),
                    "val_cases": evaluation.get("held_out_cases") if config.val_cases else None,
                    **strategy,
                    "job_id": job.id,
                    "losses": [round(v, 5) for v in history],
                    "device": self.device,
                },
                "created_by": f"job:{job.id}",
            }
        )
        candidate = card.model_copy(
            update={
                "version": None,
                "provenance": provenance,
                "metrics": {"site_evaluation": evaluation},
                "export": {},
            }
        )
        weights = folder / "candidate-weights.pt"
        torch.save({k: v.cpu() for k, v in network.state_dict().items()}, weights)
        return register_weights(
            self.registry,
            candidate,
            weights,
            actor=f"job:{job.id}",
            reason=f"fine-tuned by job {job.id} from {parent}",
            aliases=(CANDIDATE,),
        )


class Worker:
    """Claims and runs jobs until told to stop; recovers jobs of dead workers."""

    def __init__(self, settings: Settings) -> None:
        stores = Stores.from_settings(settings)
        self.store, self.registry = stores.jobs, stores.registry
        self.identity = worker_identity()
        self.device = f"{self.identity.rpartition(':')[0]}/{torch_device()}"
        inference = InferenceSettings(settings.sw_overlap, settings.sw_batch_size)
        self.runner = JobRunner(self.store, self.registry, self.identity, inference)
        self.poll_seconds = settings.worker_poll_seconds
        self.stopping = threading.Event()

    def run_once(self) -> Job | None:
        """Recover stale jobs, then run the next queued one (if any)."""
        for job in self.store.recover():
            logger.info("recovered job %s: now %s", job.id, job.state)
        job = self.store.claim(self.identity, self.device)
        if job is None:
            return None
        logger.info("running job %s", job.id)
        return self.runner.run(job)

    def describe(self) -> str:
        return f"{self.identity} on {self.device}"

    def serve_forever(self) -> None:
        """Loop until stopped; nothing one pass raises stops it (a row that cannot be read
        is left to its lease and ends ``failed`` after its attempts)."""
        while not self.stopping.is_set():
            try:
                job = self.run_once()
            except Exception:
                logger.exception("worker pass failed; going on")
                job = None
            if job is None:
                self.stopping.wait(self.poll_seconds)


def main(argv: list[str] | None = None) -> int:
    return worker_main(
        "sitetune-worker", __doc__.split("\n")[0], "sitetune.training.worker", Worker, argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
