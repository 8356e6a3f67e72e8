"""Durable PACS state: received series, analyses and deliveries (database rows) and the
received instances (files under ``<artifact_dir>/pacs/instances/<study>/<series>/``).

Series: ``receiving`` (a request is adding instances) -> ``received`` (its request ended)
-> ``queued`` (taken by a route into an analysis) | ``unrouted`` (no route takes it);
then it follows its analysis: ``analysing`` -> ``analysed`` | ``failed``. A series that
receives instances again later goes back to ``receiving`` and is analysed again.

Analyses: ``queued -> running -> done | failed``. An analysis is held by its PACS worker
with a heartbeat lease (`sitetune.work`): when the worker stops beating (it died, its host
was redeployed under another name) another worker, on any host, takes it over; one whose
input is refused fails at once; one that raised or whose worker died is tried again with
backoff and ``failed`` with the error after `MAX_ATTEMPTS`.

Deliveries (one per analysis and destination): ``pending -> sending -> delivered``, the
same primitive: claimed by one worker, retried with exponential backoff while the
destination is unreachable or refuses, ``failed`` at once when the refusal is permanent
and otherwise after the configured attempts. Rows survive restarts, so nothing is lost.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sqlalchemy import Integer, String, Text, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from sitetune.db import Base, UtcDateTime, iso_utc, utcnow
from sitetune.errors import NotFound
from sitetune.pacs.routing import Group, PacsConfig, Route, SeriesInfo
from sitetune.pacs.stow import CheckedInstance
from sitetune.work import Backoff, Lifecycle, WorkQueue

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # an analysis is tried this often (its worker died, or it raised)
LEASE = datetime.timedelta(seconds=60)  # default; SITETUNE_LEASE_SECONDS
ANALYSIS_BACKOFF = Backoff(MAX_ATTEMPTS, base_seconds=5.0, max_seconds=300.0)
DELIVERY_BACKOFF = Backoff(200, base_seconds=10.0, max_seconds=600.0)  # settings override


class SeriesState(StrEnum):
    RECEIVING = "receiving"
    RECEIVED = "received"
    QUEUED = "queued"
    UNROUTED = "unrouted"
    ANALYSING = "analysing"
    ANALYSED = "analysed"
    FAILED = "failed"


class AnalysisState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


FINISHED = (AnalysisState.DONE.value, AnalysisState.FAILED.value)
ANALYSIS_LIFECYCLE = Lifecycle(
    AnalysisState.QUEUED.value, AnalysisState.RUNNING.value, AnalysisState.FAILED.value
)


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"


DELIVERY_LIFECYCLE = Lifecycle(
    DeliveryState.PENDING.value, DeliveryState.SENDING.value, DeliveryState.FAILED.value
)


class PacsSeriesRow(Base):
    __tablename__ = "pacs_series"

    series_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    description: Mapped[str] = mapped_column(String(200), default="")
    body_part: Mapped[str] = mapped_column(String(64), default="")
    image_type: Mapped[str] = mapped_column(String(200), default="")
    instances: Mapped[int] = mapped_column(Integer, default=0)
    route: Mapped[str | None] = mapped_column(String(80))
    analysis_id: Mapped[str | None] = mapped_column(String(32))
    first_received_at: Mapped[datetime.datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime.datetime] = mapped_column(UtcDateTime, index=True)


class PacsAnalysisRow(Base):
    __tablename__ = "pacs_analyses"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    route: Mapped[str] = mapped_column(String(80))
    model: Mapped[str] = mapped_column(String(80))
    study_uid: Mapped[str] = mapped_column(String(64))
    series_uids: Mapped[str] = mapped_column(Text)  # JSON list
    created_at: Mapped[datetime.datetime] = mapped_column(UtcDateTime, index=True)
    started_at: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime)
    worker: Mapped[str | None] = mapped_column(String(120))
    heartbeat_at: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    outputs: Mapped[str | None] = mapped_column(Text)  # JSON list of {kind, path, sop_uid}
    summary: Mapped[str | None] = mapped_column(Text)  # JSON: model, measurements
    error: Mapped[str | None] = mapped_column(Text)


class PacsDeliveryRow(Base):
    __tablename__ = "pacs_deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    analysis_id: Mapped[str] = mapped_column(String(32), index=True)
    destination: Mapped[str] = mapped_column(String(80))
    state: Mapped[str] = mapped_column(String(16), index=True)
    files: Mapped[str] = mapped_column(Text)  # JSON list of paths
    worker: Mapped[str | None] = mapped_column(String(120))
    heartbeat_at: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime.datetime] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime.datetime] = mapped_column(UtcDateTime, index=True)
    delivered_at: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


@dataclass(frozen=True)
class Analysis:
    id: str
    state: str
    route: str
    model: str
    study_uid: str
    series_uids: list[str]
    attempts: int
    worker: str | None  # "host:pid" of the PACS worker that ran it last
    outputs: list[dict]
    summary: dict | None
    error: str | None
    created_at: str | None
    finished_at: str | None

    @classmethod
    def from_row(cls, row: PacsAnalysisRow) -> Analysis:
        return cls(
            id=row.id,
            state=row.state,
            route=row.route,
            model=row.model,
            study_uid=row.study_uid,
            series_uids=json.loads(row.series_uids),
            attempts=row.attempts,
            worker=row.worker,
            outputs=json.loads(row.outputs) if row.outputs else [],
            summary=json.loads(row.summary) if row.summary else None,
            error=row.error,
            created_at=iso_utc(row.created_at),
            finished_at=iso_utc(row.finished_at),
        )

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        out["outputs"] = [{k: v for k, v in o.items() if k != "path"} for o in self.outputs]
        return out


@dataclass(frozen=True)
class Delivery:
    id: str
    analysis_id: str
    destination: str
    state: str
    files: list[str]
    attempts: int
    next_attempt_at: str | None
    delivered_at: str | None
    last_error: str | None

    @classmethod
    def from_row(cls, row: PacsDeliveryRow) -> Delivery:
        return cls(
            id=row.id,
            analysis_id=row.analysis_id,
            destination=row.destination,
            state=row.state,
            files=json.loads(row.files),
            attempts=row.attempts,
            next_attempt_at=iso_utc(row.next_attempt_at),
            delivered_at=iso_utc(row.delivered_at),
            last_error=row.last_error,
        )

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        out["files"] = len(self.files)
        return out


def _series_json(row: PacsSeriesRow) -> dict:
    return {
        "series_uid": row.series_uid,
        "study_uid": row.study_uid,
        "state": row.state,
        "modality": row.modality,
        "series_description": row.description,
        "body_part": row.body_part,
        "instances": row.instances,
        "route": row.route,
        "analysis_id": row.analysis_id,
        "received_at": iso_utc(row.received_at),
    }


class PacsStore:
    """Rows and files of everything that came in over DICOMweb and what was sent back."""

    def __init__(
        self,
        engine: Engine,
        artifact_dir: Path,
        lease: datetime.timedelta = LEASE,
        delivery_backoff: Backoff = DELIVERY_BACKOFF,
    ) -> None:
        self.engine = engine
        self.root = Path(artifact_dir) / "pacs"
        self.analyses = WorkQueue(
            engine, PacsAnalysisRow, ANALYSIS_LIFECYCLE, lease=lease,
            backoff=ANALYSIS_BACKOFF, order=(PacsAnalysisRow.created_at,),
        )  # fmt: skip
        self.deliveries = WorkQueue(
            engine, PacsDeliveryRow, DELIVERY_LIFECYCLE, lease=lease,
            backoff=delivery_backoff, order=(PacsDeliveryRow.next_attempt_at,),
            error_column="last_error",
        )  # fmt: skip

    # -- receiving -------------------------------------------------------------------
    def series_folder(self, study_uid: str, series_uid: str) -> Path:
        return self.root / "instances" / study_uid / series_uid

    def output_folder(self, analysis_id: str) -> Path:
        return self.root / "outputs" / analysis_id

    def accept(self, instances: list[CheckedInstance]) -> set[str]:
        """Move checked parts into their series folders and record their series as
        receiving (one transaction for the lot). Returns the series UIDs."""
        added: dict[str, int] = {}
        first: dict[str, CheckedInstance] = {}
        for instance in instances:
            folder = self.series_folder(instance.study_uid, instance.series_uid)
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{instance.sop_instance_uid}.dcm"
            new = not target.exists()
            os.replace(instance.part.path, target)
            first.setdefault(instance.series_uid, instance)
            added[instance.series_uid] = added.get(instance.series_uid, 0) + int(new)
        for _ in range(3):  # two workers may create the same series row at once
            try:
                self._upsert_series(first, added)
                break
            except IntegrityError:
                continue
        return set(first)

    def _upsert_series(self, first: dict[str, CheckedInstance], added: dict[str, int]) -> None:
        now = utcnow()
        with Session(self.engine) as s, s.begin():
            for series_uid, instance in first.items():
                row = s.get(PacsSeriesRow, series_uid)
                if row is None:
                    ds = instance.dataset
                    s.add(
                        PacsSeriesRow(
                            series_uid=series_uid,
                            study_uid=instance.study_uid,
                            state=SeriesState.RECEIVING.value,
                            instances=added[series_uid],
                            first_received_at=now,
                            received_at=now,
                            modality=str(ds.get("Modality", ""))[:16],
                            description=str(ds.get("SeriesDescription", ""))[:200],
                            body_part=str(ds.get("BodyPartExamined", ""))[:64],
                            image_type="\\".join(str(v) for v in ds.get("ImageType") or [])[:200],
                        )
                    )
                    continue
                row.state = SeriesState.RECEIVING.value
                row.received_at = now
                row.route = row.analysis_id = None
                row.instances += added[series_uid]

    def end_request(self, series_uids: set[str]) -> None:
        """The request that brought these series is over: they may now be assembled."""
        if not series_uids:
            return
        with Session(self.engine) as s, s.begin():
            s.execute(
                update(PacsSeriesRow)
                .where(
                    PacsSeriesRow.series_uid.in_(series_uids),
                    PacsSeriesRow.state == SeriesState.RECEIVING.value,
                )
                .values(state=SeriesState.RECEIVED.value, received_at=utcnow())
            )

    # -- assembling ------------------------------------------------------------------
    def assemble(self, config: PacsConfig, settle: datetime.timedelta) -> list[Analysis]:
        """Route the series received at least ``settle`` ago; queue their analyses.

        A study-grouped route waits until no series of the study is still receiving.
        """
        cutoff = utcnow() - settle
        created = []
        with Session(self.engine) as s, s.begin():
            ready = s.scalars(
                select(PacsSeriesRow).where(
                    PacsSeriesRow.state == SeriesState.RECEIVED.value,
                    PacsSeriesRow.received_at <= cutoff,
                )
            ).all()
            groups: dict[tuple[Route, str], list[PacsSeriesRow]] = {}
            for row in ready:
                info = SeriesInfo(
                    row.modality, row.description, row.body_part, tuple(row.image_type.split("\\"))
                )
                route = config.route_for(info)
                if route is None:
                    row.state = SeriesState.UNROUTED.value
                    continue
                row.route = route.name
                unit = row.study_uid if route.group == Group.STUDY else row.series_uid
                groups.setdefault((route, unit), []).append(row)
            for (route, _), rows in groups.items():
                if route.group == Group.STUDY:
                    busy = s.scalar(
                        select(func.count()).where(
                            PacsSeriesRow.study_uid == rows[0].study_uid,
                            PacsSeriesRow.state == SeriesState.RECEIVING.value,
                        )
                    )
                    if busy:
                        continue
                analysis_id = uuid.uuid4().hex
                for row in rows:
                    row.state = SeriesState.QUEUED.value
                    row.analysis_id = analysis_id
                analysis = PacsAnalysisRow(
                    id=analysis_id,
                    state=AnalysisState.QUEUED.value,
                    route=route.name,
                    model=route.model,
                    study_uid=rows[0].study_uid,
                    series_uids=json.dumps(sorted(r.series_uid for r in rows)),
                    created_at=datetime.datetime.now(datetime.UTC),
                    attempts=0,
                )
                s.add(analysis)
                s.flush()
                created.append(Analysis.from_row(analysis))
        return created

    def series_files(self, analysis: Analysis) -> list[Path]:
        """The instance files of an analysis's series."""
        files = []
        for series_uid in analysis.series_uids:
            files.extend(sorted(self.series_folder(analysis.study_uid, series_uid).glob("*.dcm")))
        return files

    # -- analyses --------------------------------------------------------------------
    def analysis(self, analysis_id: str) -> Analysis:
        with Session(self.engine) as s:
            row = s.get(PacsAnalysisRow, analysis_id)
            if row is None:
                raise NotFound(f"no analysis {analysis_id!r}", code="analysis_not_found")
            return Analysis.from_row(row)

    def claim(self, worker: str) -> Analysis | None:
        """Take the oldest due queued analysis (atomically: one worker per analysis)."""
        analysis_id = self.analyses.claim(
            worker,
            values={"started_at": utcnow()},
            also=lambda s, item: self._series_follow(s, item, SeriesState.ANALYSING),
        )
        return None if analysis_id is None else self.analysis(analysis_id)

    @staticmethod
    def _series_follow(s: Session, analysis_id: str, state: SeriesState) -> None:
        """Put the series of an analysis in ``state`` (those not receiving anew)."""
        s.execute(
            update(PacsSeriesRow)
            .where(
                PacsSeriesRow.analysis_id == analysis_id,
                PacsSeriesRow.state.in_([SeriesState.QUEUED.value, SeriesState.ANALYSING.value]),
            )
            .values(state=state.value)
        )

    def finish(
        self,
        analysis_id: str,
        worker: str,
        *,
        outputs: list[dict] | None = None,
        summary: dict | None = None,
        error: str | None = None,
        deliveries: dict[str, list[str]] | None = None,
    ) -> Analysis:
        """Record the outcome of an analysis ``worker`` holds (an ``error`` fails it for
        good: the input was refused) and queue its deliveries (destination -> files).
        Nothing is written when another worker took it over meanwhile."""
        now = utcnow()

        def record(s: Session, item: str) -> None:
            self._series_follow(s, item, SeriesState.FAILED if error else SeriesState.ANALYSED)
            for destination, files in (deliveries or {}).items():
                s.add(
                    PacsDeliveryRow(
                        id=uuid.uuid4().hex,
                        analysis_id=item,
                        destination=destination,
                        state=DeliveryState.PENDING.value,
                        files=json.dumps(files),
                        attempts=0,
                        created_at=now,
                        next_attempt_at=now,
                    )
                )

        state = (AnalysisState.FAILED if error else AnalysisState.DONE).value
        values = {
            "finished_at": now,
            "outputs": json.dumps(outputs or []),
            "summary": json.dumps(summary) if summary is not None else None,
            "error": error,
        }
        if not self.analyses.finish(analysis_id, worker, state, values, also=record):
            logger.warning("analysis %s was taken over; %s's outcome dropped", analysis_id, worker)
        return self.analysis(analysis_id)

    def attempt_failed(self, analysis_id: str, worker: str, error: str) -> Analysis:
        """An attempt raised: the analysis is tried again after a backoff, or ``failed``
        with ``error`` once its attempts are spent."""
        self.analyses.retry(analysis_id, worker, error, also=self._series_after_retry)
        return self.analysis(analysis_id)

    def recover(self, alive=None) -> list[str]:
        """Queue again (or fail) running analyses and sending deliveries whose worker's
        lease ran out (or, on this host, whose process is gone; ``alive(worker)``
        overrides that check). Returns the analysis ids."""
        self.deliveries.expire(alive)
        return [item for item, _ in self.analyses.expire(alive, also=self._series_after_retry)]

    def _series_after_retry(self, s: Session, analysis_id: str, state: str) -> None:
        queued = state == AnalysisState.QUEUED.value
        self._series_follow(s, analysis_id, SeriesState.QUEUED if queued else SeriesState.FAILED)

    def list_analyses(self, limit: int = 100) -> list[Analysis]:
        with Session(self.engine) as s:
            rows = s.scalars(
                select(PacsAnalysisRow).order_by(PacsAnalysisRow.created_at.desc()).limit(limit)
            )
            return [Analysis.from_row(r) for r in rows]

    def list_series(self, limit: int = 200) -> list[dict]:
        with Session(self.engine) as s:
            rows = s.scalars(
                select(PacsSeriesRow).order_by(PacsSeriesRow.received_at.desc()).limit(limit)
            )
            return [_series_json(r) for r in rows]

    # -- deliveries ------------------------------------------------------------------
    def claim_delivery(self, worker: str) -> Delivery | None:
        """Take the delivery due longest (``sending``, held by ``worker``)."""
        delivery_id = self.deliveries.claim(worker)
        return None if delivery_id is None else self.delivery(delivery_id)

    def delivery_attempted(
        self, delivery_id: str, worker: str, error: str | None, *, permanent: bool = False
    ) -> Delivery:
        """Record one attempt of a delivery ``worker`` holds: delivered (``error``
        None), tried again after the backoff, or failed (``permanent``, or the
        attempts are spent)."""
        if error is None:
            values = {"delivered_at": utcnow(), "last_error": None}
            self.deliveries.finish(delivery_id, worker, DeliveryState.DELIVERED.value, values)
        else:
            self.deliveries.retry(delivery_id, worker, error, permanent=permanent)
        return self.delivery(delivery_id)

    def delivery(self, delivery_id: str) -> Delivery:
        with Session(self.engine) as s:
            row = s.get(PacsDeliveryRow, delivery_id)
            if row is None:
                raise NotFound(f"no delivery {delivery_id!r}", code="delivery_not_found")
            return Delivery.from_row(row)

    def retry_delivery(self, delivery_id: str) -> Delivery:
        """Send a delivery again now (an operator's retry of a failed one)."""
        with Session(self.engine) as s, s.begin():
            row = s.get(PacsDeliveryRow, delivery_id)
            if row is None:
                raise NotFound(f"no delivery {delivery_id!r}", code="delivery_not_found")
            if row.state == DeliveryState.SENDING.value:
                return self.delivery(delivery_id)  # being sent now
            row.state, row.next_attempt_at = DeliveryState.PENDING.value, utcnow()
            row.attempts, row.worker = 0, None  # an operator's retry: a fresh set of attempts
        return self.delivery(delivery_id)

    def list_deliveries(self, limit: int = 200, analysis_id: str | None = None) -> list[Delivery]:
        with Session(self.engine) as s:
            query = select(PacsDeliveryRow).order_by(PacsDeliveryRow.created_at.desc())
            if analysis_id:
                query = query.where(PacsDeliveryRow.analysis_id == analysis_id)
            return [Delivery.from_row(r) for r in s.scalars(query.limit(limit))]

    def purge_expired(self, older_than: datetime.timedelta) -> int:
        """Delete the files (received instances, SEG / SR) of analyses finished longer than
        ``older_than`` ago with no delivery still pending, and of unrouted series received
        that long ago. Rows stay, as the record of what came and went. Returns the number
        of folders removed."""
        cutoff = utcnow() - older_than
        folders: list[Path] = []
        with Session(self.engine) as s:
            pending = select(PacsDeliveryRow.analysis_id).where(
                PacsDeliveryRow.state == DeliveryState.PENDING.value
            )
            finished = s.scalars(
                select(PacsAnalysisRow).where(
                    PacsAnalysisRow.state.in_(
                        [AnalysisState.DONE.value, AnalysisState.FAILED.value]
                    ),
                    PacsAnalysisRow.finished_at <= cutoff,
                    PacsAnalysisRow.id.not_in(pending),
                )
            ).all()
            for analysis in finished:
                folders.append(self.output_folder(analysis.id))
                series = s.scalars(
                    select(PacsSeriesRow).where(PacsSeriesRow.analysis_id == analysis.id)
                )  # not re-sent since: still pointing at this analysis
                folders += [self.series_folder(r.study_uid, r.series_uid) for r in series]
            unrouted = s.scalars(
                select(PacsSeriesRow).where(
                    PacsSeriesRow.state == SeriesState.UNROUTED.value,
                    PacsSeriesRow.received_at <= cutoff,
                )
            )
            folders += [self.series_folder(r.study_uid, r.series_uid) for r in unrouted]
        removed = 0
        for folder in folders:
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    def counts(self) -> dict[str, dict[str, int]]:
        """Rows per state, for ``/metrics``."""
        out = {}
        with Session(self.engine) as s:
            for name, table in (
                ("series", PacsSeriesRow),
                ("analyses", PacsAnalysisRow),
                ("deliveries", PacsDeliveryRow),
            ):
                rows = s.execute(select(table.state, func.count()).group_by(table.state))
                out[name] = {state: n for state, n in rows}
        return out
