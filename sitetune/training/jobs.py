"""Durable fine-tune jobs: rows in the database, claimed by worker processes.

States: ``queued -> running -> succeeded | failed | cancelled`` (and ``running -> queued``
when a job is resumed after its worker died). A worker claims the oldest queued job
atomically (a conditional UPDATE, so two workers never take the same job), runs one job
per device at a time, and writes a heartbeat every few seconds. A running job whose
worker stopped beating (or, on the same host, whose process is gone) is recovered: put
back in the queue to resume from its last checkpoint, or failed with the reason once it
has been attempted too often. Nothing is ever left ``running`` for good.

Each job owns a folder ``<artifact_dir>/jobs/<id>/``: the validated dataset, per-epoch
checkpoints and ``log.txt``.
"""

from __future__ import annotations

import datetime
import json
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, Integer, String, Text, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from sitetune.db import Base, UtcDateTime, iso_utc, utcnow
from sitetune.errors import Conflict, NotFound
from sitetune.work import Backoff, Lifecycle, WorkQueue

MAX_ATTEMPTS = 3  # a job is resumed at most this many times after its worker died
LEASE = datetime.timedelta(seconds=60)  # default; SITETUNE_LEASE_SECONDS
BACKOFF = Backoff(MAX_ATTEMPTS, base_seconds=0.0)  # resumed at once, from its checkpoint


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
LIFECYCLE = Lifecycle(
    JobState.QUEUED.value, JobState.RUNNING.value, JobState.FAILED.value,
    cancelled=JobState.CANCELLED.value,
)  # fmt: skip


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    base: Mapped[str] = mapped_column(String(80))  # "name:version" resolved at submission
    config: Mapped[str] = mapped_column(Text)
    dataset_fingerprint: Mapped[str] = mapped_column(String(80))
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime.datetime] = mapped_column(UtcDateTime, index=True)
    started_at: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime)
    heartbeat_at: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime)
    worker: Mapped[str | None] = mapped_column(String(120))  # "host:pid"
    device: Mapped[str | None] = mapped_column(String(120))  # "host/cpu", "host/cuda:0"
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)


@dataclass(frozen=True)
class Job:
    """A snapshot of one job row."""

    id: str
    state: JobState
    base: str
    config: dict
    dataset_fingerprint: str
    created_by: str
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    heartbeat_at: datetime.datetime | None
    worker: str | None
    device: str | None
    attempts: int
    cancel_requested: bool
    progress: dict | None
    result: dict | None
    error: str | None

    @classmethod
    def from_row(cls, row: JobRow) -> Job:
        return cls(
            id=row.id,
            state=JobState(row.state),
            base=row.base,
            config=json.loads(row.config),
            dataset_fingerprint=row.dataset_fingerprint,
            created_by=row.created_by,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            heartbeat_at=row.heartbeat_at,
            worker=row.worker,
            device=row.device,
            attempts=row.attempts,
            cancel_requested=row.cancel_requested,
            progress=json.loads(row.progress) if row.progress else None,
            result=json.loads(row.result) if row.result else None,
            error=row.error,
        )

    def to_json(self) -> dict:
        """The job as the HTTP API returns it."""
        return {
            "job_id": self.id,
            "state": self.state.value,
            "base": self.base,
            "config": self.config,
            "dataset_fingerprint": self.dataset_fingerprint,
            "progress": self.progress,
            "created_by": self.created_by,
            "created_at": iso_utc(self.created_at),
            "started_at": iso_utc(self.started_at),
            "finished_at": iso_utc(self.finished_at),
            "attempts": self.attempts,
            "worker": self.worker,
            "device": self.device,
            "cancel_requested": self.cancel_requested,
            "error": self.error,
            "result": self.result,
        }


class JobStore:
    """Job rows and job folders."""

    def __init__(
        self, engine: Engine, artifact_dir: Path, lease: datetime.timedelta = LEASE
    ) -> None:
        self.engine = engine
        self.root = Path(artifact_dir) / "jobs"
        self.queue = WorkQueue(
            engine, JobRow, LIFECYCLE, lease=lease, backoff=BACKOFF,
            order=(JobRow.created_at, JobRow.id),
        )  # fmt: skip

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def log_path(self, job_id: str) -> Path:
        return self.folder(job_id) / "log.txt"

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    # -- reading ---------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        with Session(self.engine) as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"no job {job_id!r}", code="job_not_found")
            return Job.from_row(row)

    def list(self, limit: int = 200) -> list[Job]:
        with Session(self.engine) as s:
            rows = s.scalars(select(JobRow).order_by(JobRow.created_at.desc()).limit(limit))
            return [Job.from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Jobs per state, for ``/metrics``."""
        with Session(self.engine) as s:
            rows = s.execute(select(JobRow.state, func.count()).group_by(JobRow.state))
            return {state: n for state, n in rows}

    # -- writing ---------------------------------------------------------------------
    def submit(
        self, job_id: str, base: str, config: dict, fingerprint: str, created_by: str
    ) -> Job:
        """Queue a job whose dataset is already in place under `folder`."""
        with Session(self.engine) as s, s.begin():
            s.add(
                JobRow(
                    id=job_id,
                    state=JobState.QUEUED.value,
                    base=base,
                    config=json.dumps(config),
                    dataset_fingerprint=fingerprint,
                    created_by=created_by,
                    created_at=datetime.datetime.now(datetime.UTC),  # microseconds: FIFO
                    attempts=0,
                    cancel_requested=False,
                )
            )
        return self.get(job_id)

    def claim(self, worker: str, device: str) -> Job | None:
        """Take the oldest queued job for ``worker`` on ``device``, unless that device is
        already running one (one job per device at a time)."""
        with Session(self.engine) as s:
            busy = s.scalar(
                select(JobRow.id).where(
                    JobRow.state == JobState.RUNNING.value, JobRow.device == device
                )
            )
        if busy is not None:
            return None
        job_id = self.queue.claim(worker, values={"device": device, "started_at": utcnow()})
        return None if job_id is None else self.get(job_id)

    def heartbeat(self, job_id: str, worker: str, progress: dict | None = None) -> bool:
        """Record that ``worker`` is alive (and its progress); True when it must stop:
        cancel was asked, or the job is no longer its own (another worker took it over
        after this one stalled past the lease)."""
        values = None if progress is None else {"progress": json.dumps(progress)}
        if not self.queue.heartbeat(job_id, worker, values):
            return True
        with Session(self.engine) as s:
            return bool(s.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))

    def finish(
        self,
        job_id: str,
        worker: str,
        state: JobState,
        *,
        result: dict | None = None,
        error: str | None = None,
    ) -> Job:
        """End a running job held by ``worker`` in a terminal ``state``."""
        if state not in TERMINAL:
            raise ValueError(f"{state} is not a terminal state")
        values: dict[str, Any] = {"finished_at": utcnow()}
        if result is not None:
            values["result"] = json.dumps(result)
        if error is not None:
            values["error"] = error
        self.queue.finish(job_id, worker, state.value, values)
        return self.get(job_id)

    def request_cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once; ask the worker of a running one to stop."""
        with Session(self.engine) as s, s.begin():
            row = s.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"no job {job_id!r}", code="job_not_found")
            state = JobState(row.state)
            if state in (JobState.SUCCEEDED, JobState.FAILED):
                raise Conflict(
                    f"job {job_id} already ended ({state.value}); nothing to cancel",
                    code="job_finished",
                )
            row.cancel_requested = True
            if state is JobState.QUEUED:
                row.state = JobState.CANCELLED.value
                row.finished_at = utcnow()
        return self.get(job_id)

    def recover(self, lease: datetime.timedelta | None = None) -> list[Job]:
        """Requeue (or fail) running jobs whose worker is gone; returns the jobs changed.

        A worker is gone when its heartbeat is older than the lease (``lease``, else the
        store's), or at once when it ran on this host and its process has exited. A job
        goes back to the queue (to resume from its last checkpoint) unless it was
        cancelled meanwhile (-> cancelled) or has been attempted `MAX_ATTEMPTS` times
        (-> failed, with the reason).
        """
        return [self.get(job_id) for job_id, _ in self.queue.expire(lease=lease)]
