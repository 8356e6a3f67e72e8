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
import traceback
from pathlib import Path

from sitetune.analysis.admission import MemoryGate
from sitetune.analysis.pipeline import Pipeline
from sitetune.errors import SitetuneError
from sitetune.housekeeping import Housekeeping
from sitetune.models.serving import ModelServer
from sitetune.pacs.analysis import analyse
from sitetune.pacs.delivery import DeliveryError, deliver
from sitetune.pacs.routing import PacsConfig, load_config
from sitetune.pacs.store import Analysis, Delivery
from sitetune.processes import worker_identity, worker_main
from sitetune.settings import Settings
from sitetune.stores import Stores

logger = logging.getLogger("sitetune.pacs")


class PacsWorker:
    """One loop: recover, assemble, run one analysis, send due deliveries."""

    def __init__(self, settings: Settings, config: PacsConfig | None = None) -> None:
        stores = Stores.from_settings(settings)
        self.settings = settings
        self.store = stores.pacs
        self.periodic = stores.periodic
        self.config = config or load_config(settings.resolved_pacs_config)
        self.pipeline = Pipeline(
            ModelServer.from_settings(stores.registry, settings),
            MemoryGate(settings.worker_memory_bytes, settings.admission_wait_seconds),
        )
        self.identity = worker_identity()
        self.stopping = threading.Event()
        self.housekeeping = Housekeeping(settings, stores)

    def run_once(self) -> bool:
        """One pass; True when it did some work. Each step stands alone: one that raises
        is logged and the others still run (`serve_forever` goes on after anything)."""
        worked = False
        for step in (self._housekeeping, self._assemble, self._analyse, self._deliver):
            try:
                worked = bool(step()) or worked
            except Exception:
                logger.exception("PACS worker: %s failed; going on", step.__name__)
        return worked

    def _housekeeping(self) -> bool:
        """Retention and crash leftovers (`sitetune.housekeeping`), once per period across
        all PACS workers."""
        every = datetime.timedelta(seconds=self.settings.housekeeping_seconds)
        return self.periodic.run_if_due("housekeeping", self.identity, every, self.housekeeping.run)

    def _assemble(self) -> bool:
        for analysis_id in self.store.recover():
            logger.info("analysis %s: its worker stopped; taken back", analysis_id)
        settle = datetime.timedelta(seconds=self.settings.pacs_settle_seconds)
        for analysis in self.store.assemble(self.config, settle):
            logger.info(
                "analysis %s queued: route %s, %d series",
                analysis.id, analysis.route, len(analysis.series_uids),
            )  # fmt: skip
        return False

    def _analyse(self) -> bool:
        analysis = self.store.claim(self.identity)
        if analysis is None:
            return False
        self.run_analysis(analysis)
        return True

    def _deliver(self) -> bool:
        worked = False
        for _ in range(20):  # then the next pass: new analyses are not kept waiting
            delivery = self.store.claim_delivery(self.identity)
            if delivery is None:
                break
            self.run_delivery(delivery)
            worked = True
        return worked

    def run_analysis(self, analysis: Analysis) -> Analysis:
        """Run an analysis this worker holds, heartbeating its lease meanwhile. Refused
        input fails it at once; anything else raised is tried again with backoff and
        fails it only after the attempts are spent (a poison item never stops the loop)."""
        route = next((r for r in self.config.routes if r.name == analysis.route), None)
        folder = self.store.output_folder(analysis.id)
        with self.store.analyses.held(analysis.id, self.identity) as lease:
            try:
                if route is None:
                    raise SitetuneError(f"route {analysis.route!r} is no longer configured")
                files = self.store.series_files(analysis)
                output = analyse(
                    files, self.pipeline, route.model, folder, self.settings.image_limits
                )
            except SitetuneError as error:
                logger.warning("analysis %s failed: %s", analysis.id, error.message)
                message = f"{error.code}: {error.message}"
                return self.store.finish(analysis.id, self.identity, error=message)
            except Exception as error:  # recorded, never lost: the row says what went wrong
                logger.error("analysis %s raised:\n%s", analysis.id, traceback.format_exc())
                message = f"internal: {type(error).__name__}: {error}"
                return self.store.attempt_failed(analysis.id, self.identity, message)
        if lease.lost.is_set():
            logger.warning("analysis %s was taken over by another worker", analysis.id)
        files = [item["path"] for item in output.files]
        done = self.store.finish(
            analysis.id,
            self.identity,
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
        """Send a delivery this worker holds; record delivered, retry later or failed."""
        destination = self.config.destinations.get(delivery.destination)
        try:
            with self.store.deliveries.held(delivery.id, self.identity):
                if destination is None:
                    raise DeliveryError(f"destination {delivery.destination!r} is not configured")
                deliver(destination, [Path(p) for p in delivery.files])
        except Exception as raised:  # anything: a refused SOP class, an aborted association
            error = raised if isinstance(raised, DeliveryError) else None
            if error is None:
                logger.warning("delivery %s raised", delivery.id, exc_info=True)
                error = f"{type(raised).__name__}: {raised}"
            permanent = getattr(error, "permanent", False)
            after = self.store.delivery_attempted(
                delivery.id, self.identity, str(error), permanent=permanent
            )
            logger.warning(
                "delivery %s to %s, attempt %d: %s; %s",
                delivery.id, delivery.destination, after.attempts, error,
                f"next try at {after.next_attempt_at}" if after.state == "pending"
                else "giving up",
            )  # fmt: skip
            return after
        logger.info("delivery %s to %s: delivered", delivery.id, delivery.destination)
        return self.store.delivery_attempted(delivery.id, self.identity, None)

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
