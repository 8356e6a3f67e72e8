"""sitetune's own Prometheus metrics, beside BentoML's (module level: BentoML aggregates
them across worker processes)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from sitetune.models.registry import ModelVersion

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
