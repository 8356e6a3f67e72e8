"""sitetune's own Prometheus metrics, beside BentoML's (module level: BentoML aggregates
them across worker processes)."""

from __future__ import annotations

import logging
import os
import threading
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from sitetune.models.registry import ModelVersion
from sitetune.pacs.store import PacsStore
from sitetune.training.jobs import JobState, JobStore

logger = logging.getLogger(__name__)

STAGE_SECONDS = Histogram(
    "sitetune_inference_stage_seconds",
    "Time per inference stage",
    ["model", "version", "backend", "stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120),
)
REGISTRY_EVENTS = Counter("sitetune_registry_events_total", "Registry changes", ["model", "action"])


def observe_stages(version: ModelVersion, backend: str, timings_ms: dict[str, float]) -> None:
    for stage, ms in timings_ms.items():
        STAGE_SECONDS.labels(version.name, str(version.version), backend, stage).observe(ms / 1000)


PACS_ROWS = Gauge(
    "sitetune_pacs_rows",
    "PACS series, analyses and deliveries per state (from the database)",
    ["table", "state"],
    multiprocess_mode="livemax",
)
JOBS = Gauge(
    "sitetune_jobs", "Fine-tune jobs per state (from the database)", ["state"],
    multiprocess_mode="livemax",
)  # fmt: skip
RECLAIMED = Gauge(
    "sitetune_housekeeping_reclaimed_bytes",
    "Bytes removed by housekeeping so far, per kind (results, pacs, leftovers, job_files)",
    ["kind"],
    multiprocess_mode="livemax",
)
REFRESH_SECONDS = 5.0


def start_state_gauges(pacs: PacsStore, jobs: JobStore, reclaimed=None) -> None:
    """Refresh `PACS_ROWS`, `JOBS` (and `RECLAIMED` from ``reclaimed()``) from the database
    every few seconds in a daemon thread (the PACS and fine-tune workers are not BentoML
    workers, so their state is exported from here)."""

    def refresh() -> None:
        while True:
            try:
                for table, states in pacs.counts().items():
                    for name in _PACS_STATES[table]:
                        PACS_ROWS.labels(table, name).set(states.get(name, 0))
                states = jobs.counts()
                for state in JobState:
                    JOBS.labels(state.value).set(states.get(state.value, 0))
                for kind, size in (reclaimed() if reclaimed else {}).items():
                    RECLAIMED.labels(kind).set(size)
            except Exception:  # a locked or missing database: try again next time
                logger.debug("could not refresh the state gauges", exc_info=True)
            time.sleep(REFRESH_SECONDS)

    threading.Thread(target=refresh, name="state-gauges", daemon=True).start()


_PACS_STATES = {
    "series": ("receiving", "received", "queued", "unrouted", "analysing", "analysed", "failed"),
    "analyses": ("queued", "running", "done", "failed"),
    "deliveries": ("pending", "delivered", "failed"),
}


def exposition() -> tuple[bytes, str]:
    """The Prometheus text of every worker (BentoML runs them with a multiprocess
    directory), and its content type. BentoML's own request metrics are switched off:
    they label by raw path, so ids and UIDs leaked into ``/metrics`` and the label set
    grew without bound; `sitetune.service.perimeter` counts requests by route template."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # prometheus_client's own contract
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
