"""The durable stores of a deployment, wired once from the settings for every process
(HTTP workers, the training worker, the PACS worker, housekeeping)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from sitetune.analysis.results import ResultStore
from sitetune.db import connect
from sitetune.models.registry import Registry
from sitetune.pacs.store import PacsStore
from sitetune.settings import Settings
from sitetune.training.jobs import JobStore
from sitetune.work import Backoff, Periodic


@dataclass
class Stores:
    """Registry, results, jobs, PACS rows and periodic tasks over one database (at this
    release's schema: `sitetune.db.connect` upgrades it first) and one artifact folder."""

    engine: Engine
    registry: Registry
    results: ResultStore
    jobs: JobStore
    pacs: PacsStore
    periodic: Periodic

    @classmethod
    def from_settings(cls, settings: Settings) -> Stores:
        engine = connect(settings.resolved_database_url)
        artifacts = settings.resolved_artifact_dir
        lease = datetime.timedelta(seconds=settings.lease_seconds)
        deliveries = Backoff(
            settings.pacs_delivery_max_attempts,
            settings.pacs_retry_seconds,
            settings.pacs_retry_max_seconds,
        )
        return cls(
            engine=engine,
            registry=Registry(engine, artifacts),
            results=ResultStore(
                engine, artifacts, datetime.timedelta(hours=settings.results_retention_hours)
            ),
            jobs=JobStore(engine, artifacts, lease),
            pacs=PacsStore(engine, artifacts, lease, deliveries),
            periodic=Periodic(engine, lease),
        )
