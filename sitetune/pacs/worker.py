"""``sitetune-pacs``: the PACS worker. It assembles received series into analyses by the
routing rules, runs them (segment, measure, SEG + SR), and delivers the outputs to each
route's destinations, retrying with backoff. All its state is in the database, so a
restart (or a second worker) carries on where the last one stopped.

The serve command starts it (``--supervise``: restarted whenever it dies) unless
``SITETUNE_EMBEDDED_PACS_WORKER=false``.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
import traceback
from pathlib import Path

from sitetune.analysis.admission import MemoryGate
from sitetune.analysis.pipeline import Pipeline
from sitetune.db import make_engine
from sitetune.errors import SitetuneError
from sitetune.housekeeping import Housekeeping
from sitetune.models.registry import Registry
from sitetune.models.serving import ModelServer
from sitetune.pacs.analysis import analyse
from sitetune.pacs.delivery import DeliveryError, deliver, next_retry
from sitetune.pacs.routing import PacsConfig, load_config
from sitetune.pacs.store import Analysis, Delivery, PacsStore
from sitetune.processes import process_gone, worker_identity, worker_main
from sitetune.settings import Settings

logger = logging.getLogger("sitetune.pacs")


class PacsWorker:
    """One loop: recover, assemble, run one analysis, send due deliveries."""

    def __init__(self, settings: Settings, config: PacsConfig | None = None) -> None:
        engine = make_engine(settings.resolved_database_url)
        artifacts = settings.resolved_artifact_dir
        self.settings = settings
        self.store = PacsStore(engine, artifacts)
        self.config = config or load_config(settings.resolved_pacs_config)
        self.pipeline = Pipeline(
            ModelServer.from_settings(Registry(engine, artifacts), settings),
            MemoryGate(settings.worker_memory_bytes, settings.admission_wait_seconds),
        )
        self.identity = worker_identity()
        self.stopping = threading.Event()
        self.retention = datetime.timedelta(hours=settings.results_retention_hours)
        self.housekeeping = Housekeeping.from_settings(settings, engine)
        self._next_purge = 0.0

    def run_once(self) -> bool:
        """One pass; True when it did some work."""
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + self.settings.housekeeping_seconds
            self.housekeeping.run()  # retention and crash leftovers (sitetune.housekeeping)
        for analysis_id in self.store.recover(lambda w: not process_gone(w)):
            logger.info("analysis %s: its worker died; recovered", analysis_id)
        settle = datetime.timedelta(seconds=self.settings.pacs_settle_seconds)
        for analysis in self.store.assemble(self.config, settle):
            logger.info(
                "analysis %s queued: route %s, %d series",
                analysis.id, analysis.route, len(analysis.series_uids),
            )  # fmt: skip
        worked = False
        analysis = self.store.claim(self.identity)
        if analysis is not None:
            self.run_analysis(analysis)
            worked = True
        for delivery in self.store.due_deliveries():
            self.run_delivery(delivery)
            worked = True
        return worked

    def run_analysis(self, analysis: Analysis) -> Analysis:
        route = next((r for r in self.config.routes if r.name == analysis.route), None)
        folder = self.store.output_folder(analysis.id)
        try:
            if route is None:
                raise SitetuneError(f"route {analysis.route!r} is no longer configured")
            files = self.store.series_files(analysis)
            output = analyse(files, self.pipeline, route.model, folder, self.settings.image_limits)
        except SitetuneError as error:
            logger.warning("analysis %s failed: %s", analysis.id, error.message)
            return self.store.finish(analysis.id, error=f"{error.code}: {error.message}")
        except Exception as error:  # recorded, never lost: the row says what went wrong
            logger.error("analysis %s failed:\n%s", analysis.id, traceback.format_exc())
            message = f"internal: {type(error).__name__}: {error}"
            return self.store.finish(analysis.id, error=message)
        files = [item["path"] for item in output.files]
        done = self.store.finish(
            analysis.id,
            outputs=output.files,
            summary=output.summary,
            deliveries={name: files for name in route.destinations},
        )
        logger.info(
            "analysis %s done in %.1f s: %d objects for %s",
            analysis.id, output.summary["timings_ms"]["total"] / 1000, len(files),
            list(route.destinations) or "no destination",
        )  # fmt: skip
        return done

    def run_delivery(self, delivery: Delivery) -> Delivery:
        destination = self.config.destinations.get(delivery.destination)
        try:
            if destination is None:
                raise DeliveryError(f"destination {delivery.destination!r} is not configured")
            deliver(destination, [Path(p) for p in delivery.files])
        except Exception as raised:  # anything: a refused SOP class, an aborted association
            error = raised if isinstance(raised, DeliveryError) else None
            if error is None:
                logger.warning("delivery %s raised", delivery.id, exc_info=True)
                error = f"{type(raised).__name__}: {raised}"
            attempts = delivery.attempts + 1
            retry = None
            permanent = getattr(error, "permanent", False)
            if attempts < self.settings.pacs_delivery_max_attempts and not permanent:
                retry = next_retry(
                    attempts,
                    self.settings.pacs_retry_seconds,
                    self.settings.pacs_retry_max_seconds,
                )
            logger.warning(
                "delivery %s to %s, attempt %d: %s; %s",
                delivery.id, delivery.destination, attempts, error,
                f"next try in {retry.total_seconds():.0f} s" if retry else "giving up",
            )  # fmt: skip
            return self.store.delivery_attempted(delivery.id, str(error), retry)
        logger.info("delivery %s to %s: delivered", delivery.id, delivery.destination)
        return self.store.delivery_attempted(delivery.id, None, None)

    def describe(self) -> str:
        destinations = {n: d.describe() for n, d in self.config.destinations.items()}
        return f"{self.identity}: routes {[r.name for r in self.config.routes]}, {destinations}"

    def serve_forever(self, poll_seconds: float = 0.5) -> None:
        """Loop until stopped; nothing one pass raises stops the loop (a database that is
        briefly locked, a bad row): it is logged and the next pass goes on."""
        while not self.stopping.is_set():
            try:
                worked = self.run_once()
            except Exception:
                logger.exception("PACS worker pass failed; going on")
                worked = False
            if not worked:
                self.stopping.wait(poll_seconds)


def main(argv: list[str] | None = None) -> int:
    return worker_main(
        "sitetune-pacs", __doc__.split("\n")[0], "sitetune.pacs.worker", PacsWorker, argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
