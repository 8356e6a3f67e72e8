"""The one durable-work primitive: rows that workers claim, hold by heartbeat, and end.

Fine-tune jobs, PACS analyses, deliveries and the periodic clean-up are each a table with
the columns ``id, state, worker, heartbeat_at, attempts, next_attempt_at`` and an error
column; a `WorkQueue` over that table does, the same way for all of them:

- **claim**: the oldest queued row that is due becomes ``running`` for one worker, by a
  conditional UPDATE (two workers never hold the same row; SQLite and PostgreSQL alike);
  the attempt is counted at the claim, so work that kills its worker is counted too;
- **heartbeat**: the holder renews its lease; a heartbeat that finds the row no longer
  held by it returns False (the work was taken over: its result must not be written);
- **end**: ``finish`` (a terminal state, only by the holder), ``retry`` (back to the
  queue after an exponential backoff, or ``failed`` with the error once the attempts are
  spent or the error is permanent);
- **lease expiry**: a running row whose heartbeat is older than the lease (or, at once,
  whose worker ran on this host and has exited) is queued again at once, or failed once
  its attempts are spent; so a worker that died, or a host that was redeployed under
  another name, never leaves work ``running`` for good: another worker, on any host,
  takes it over as soon as the lease has run out.

Hand-written because it is a few conditional UPDATEs over our own tables; the job queues
we know (Celery, RQ, procrastinate) each bring a broker or a schema of their own.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, String, Text, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from sitetune.db import Base, UtcDateTime, iso_utc
from sitetune.dicomweb import next_retry
from sitetune.processes import process_gone

logger = logging.getLogger(__name__)

Also = Callable[[Session, str], None]  # more writes in the same transaction (row id)


@dataclass(frozen=True)
class Lifecycle:
    """The values a table's ``state`` column uses for the primitive's states."""

    queued: str
    running: str
    failed: str
    cancelled: str | None = None  # where a holder can be asked to cancel (jobs)


@dataclass(frozen=True)
class Backoff:
    """Attempts and the delay before each retry: base, 2 x base, ... capped at max."""

    max_attempts: int = 3
    base_seconds: float = 10.0
    max_seconds: float = 600.0

    def delay(self, attempts: int) -> datetime.timedelta:
        """The wait after the ``attempts``-th failed attempt (`next_retry`'s rule, which
        the DIMSE bridge uses too)."""
        return next_retry(attempts, self.base_seconds, self.max_seconds)


class WorkQueue:
    """Claim, heartbeat, finish, retry and lease expiry over one table's rows."""

    def __init__(
        self,
        engine: Engine,
        row: type,
        lifecycle: Lifecycle,
        *,
        lease: datetime.timedelta,
        backoff: Backoff,
        order: Sequence[Any] = (),
        error_column: str = "error",
    ) -> None:
        self.engine, self.row, self.lifecycle = engine, row, lifecycle
        self.lease, self.backoff = lease, backoff
        self.order = tuple(order) or (row.id,)
        self.error_column = error_column

    # -- claiming --------------------------------------------------------------------
    def claim(
        self,
        worker: str,
        *,
        where: Sequence[Any] = (),
        values: dict | None = None,
        also: Also | None = None,
    ) -> str | None:
        """Make the oldest due queued row (matching ``where``) ``running`` for
        ``worker``; returns its id, or None when there is none."""
        row, now = self.row, _now()
        due = or_(row.next_attempt_at.is_(None), row.next_attempt_at <= now)
        with Session(self.engine) as s:
            candidates = s.scalars(
                select(row.id)
                .where(row.state == self.lifecycle.queued, due, *where)
                .order_by(*self.order)
                .limit(5)
            ).all()
        for item_id in candidates:
            with Session(self.engine) as s, s.begin():
                taken = s.execute(
                    update(row)
                    .where(row.id == item_id, row.state == self.lifecycle.queued)
                    .values(
                        state=self.lifecycle.running,
                        worker=worker,
                        heartbeat_at=now,
                        attempts=row.attempts + 1,
                        **(values or {}),
                    )
                ).rowcount
                if taken and also is not None:
                    also(s, item_id)
            if taken:
                return item_id
        return None

    # -- holding ---------------------------------------------------------------------
    def heartbeat(self, item_id: str, worker: str, values: dict | None = None) -> bool:
        """Renew ``worker``'s lease on a row (and write ``values``); False when the row is
        no longer running for that worker."""
        row = self.row
        with Session(self.engine) as s, s.begin():
            return bool(
                s.execute(
                    update(row)
                    .where(
                        row.id == item_id,
                        row.worker == worker,
                        row.state == self.lifecycle.running,
                    )
                    .values(heartbeat_at=_now(), **(values or {}))
                ).rowcount
            )

    @contextmanager
    def held(self, item_id: str, worker: str, every: float | None = None) -> Iterator[Lease]:
        """Heartbeat the row from a thread while the body runs (every third of the lease
        by default); ``lease.lost`` is set once the row was taken over."""
        lease = Lease(self, item_id, worker, every or self.lease.total_seconds() / 3)
        lease.start()
        try:
            yield lease
        finally:
            lease.stop()

    # -- ending ----------------------------------------------------------------------
    def finish(
        self, item_id: str, worker: str, state: str, values: dict | None = None,
        also: Also | None = None,
    ) -> bool:  # fmt: skip
        """End a row held by ``worker`` in ``state`` (with ``values``); False, and nothing
        written, when ``worker`` no longer holds it."""
        row = self.row
        with Session(self.engine) as s, s.begin():
            done = s.execute(
                update(row)
                .where(
                    row.id == item_id,
                    row.worker == worker,
                    row.state == self.lifecycle.running,
                )
                .values(state=state, **(values or {}))
            ).rowcount
            if done and also is not None:
                also(s, item_id)
        return bool(done)

    def retry(
        self,
        item_id: str,
        worker: str | None,
        error: str,
        *,
        permanent: bool = False,
        max_attempts: int | None = None,
        delay: datetime.timedelta | None = None,
        also: Callable[[Session, str, str], None] | None = None,
    ) -> str | None:
        """This attempt failed with ``error``: queue the row again after the backoff (or
        ``delay``), or fail it once its attempts are spent or the error is ``permanent``.
        Only while ``worker`` still holds it (None: whoever does). Returns the new state,
        None when the row was not held. ``also(session, id, new_state)`` writes more."""
        row, lifecycle = self.row, self.lifecycle
        limit = max_attempts or self.backoff.max_attempts
        with Session(self.engine) as s, s.begin():
            held = [row.id == item_id, row.state == lifecycle.running]
            if worker is not None:
                held.append(row.worker == worker)
            cancellable = lifecycle.cancelled is not None and hasattr(row, "cancel_requested")
            columns = [row.attempts, row.cancel_requested if cancellable else row.attempts]
            current = s.execute(select(*columns).where(*held)).first()
            if current is None:
                return None
            attempts, cancel = current[0], cancellable and bool(current[1])
            now = _now()
            values: dict[str, Any] = {self.error_column: error}
            if cancel:
                state = lifecycle.cancelled
            elif permanent or attempts >= limit:
                state = lifecycle.failed
            else:
                state = lifecycle.queued
                wait = self.backoff.delay(attempts) if delay is None else delay
                values |= {"next_attempt_at": now + wait}
                values |= {"worker": None}
            if state != lifecycle.queued and hasattr(row, "finished_at"):
                values["finished_at"] = now
            done = s.execute(update(row).where(*held).values(state=state, **values)).rowcount
            if done and also is not None:
                also(s, item_id, state)
        return state if done else None

    def expire(
        self, alive: Callable[[str | None], bool] | None = None,
        also: Callable[[Session, str, str], None] | None = None,
        lease: datetime.timedelta | None = None,
    ) -> list[tuple[str, str]]:  # fmt: skip
        """Retry (or fail) running rows whose lease (``lease``, else the queue's) ran
        out, or whose worker ran on this host and is gone (``alive`` overrides that
        check); returns (id, new state) for each."""
        row = self.row
        lease = self.lease if lease is None else lease
        cutoff = _now() - lease
        alive = alive or (lambda worker: not process_gone(worker))
        with Session(self.engine) as s:
            running = s.execute(
                select(row.id, row.worker, row.heartbeat_at, row.attempts).where(
                    row.state == self.lifecycle.running
                )
            ).all()
        changed = []
        for item_id, worker, beat, attempts in running:
            stale = beat is None or _utc(beat) < cutoff
            if not stale and alive(worker):
                continue
            error = (
                f"its worker {worker} stopped during attempt {attempts} (last heartbeat "
                f"{iso_utc(beat)}, lease {lease.total_seconds():.0f} s)"
            )
            # at once: a dead worker is not the item's fault (the attempts bound a poison one)
            state = self.retry(item_id, worker, error, also=also, delay=datetime.timedelta(0))
            if state is not None:
                logger.warning("%s %s: %s; now %s", row.__tablename__, item_id, error, state)
                changed.append((item_id, state))
        return changed


class Lease(threading.Thread):
    """The heartbeat thread of `WorkQueue.held`."""

    def __init__(self, queue: WorkQueue, item_id: str, worker: str, every: float) -> None:
        super().__init__(daemon=True, name=f"lease-{item_id[:8]}")
        self.queue, self.item_id, self.worker, self.every = queue, item_id, worker, every
        self.values: dict | None = None  # written with the next heartbeat (progress)
        self.lost = threading.Event()
        self._stop_event = threading.Event()

    def beat(self) -> bool:
        values, self.values = self.values, None
        if not self.queue.heartbeat(self.item_id, self.worker, values):
            self.lost.set()
        return not self.lost.is_set()

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            try:
                self.beat()
            except Exception:  # a database hiccup: the next beat tries again
                logger.exception("heartbeat failed")

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


class PeriodicTaskRow(Base):
    """A periodic task (the clean-up): queued until due, then held by one worker."""

    __tablename__ = "periodic_tasks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the task's name
    state: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(120))
    heartbeat_at: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime)
    last_run_at: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime)
    error: Mapped[str | None] = mapped_column(Text)


PERIODIC = Lifecycle("queued", "running", "failed")


class Periodic:
    """Periodic work done by whichever worker finds it due first, once per period across
    all workers and hosts (a row per task, claimed by the same primitive)."""

    def __init__(self, engine: Engine, lease: datetime.timedelta) -> None:
        self.engine = engine
        never_fails = Backoff(max_attempts=2**31 - 1, base_seconds=60.0, max_seconds=3600.0)
        self.queue = WorkQueue(engine, PeriodicTaskRow, PERIODIC, lease=lease, backoff=never_fails)
        self._known: set[str] = set()

    def run_if_due(self, name: str, worker: str, every: datetime.timedelta, task) -> bool:
        """Run ``task()`` when ``name`` is due and no other worker holds it; True when it
        ran. A task that raises is tried again after a backoff (it never ends failed)."""
        self._ensure(name)
        self.queue.expire()
        if self.queue.claim(worker, where=[PeriodicTaskRow.id == name]) is None:
            return False
        try:
            with self.queue.held(name, worker):
                task()
        except Exception as exc:
            logger.exception("periodic task %s failed", name)
            self.queue.retry(name, worker, f"{type(exc).__name__}: {exc}")
            return True
        now = _now()
        values = {"worker": None, "attempts": 0, "next_attempt_at": now + every,
                  "last_run_at": now, "error": None}  # fmt: skip
        self.queue.finish(name, worker, PERIODIC.queued, values)
        return True

    def _ensure(self, name: str) -> None:
        """The task's row exists (checked once per process: rows are never deleted)."""
        if name in self._known:
            return
        with Session(self.engine) as s:
            present = s.get(PeriodicTaskRow, name) is not None
        if not present:
            try:
                with Session(self.engine) as s, s.begin():
                    s.add(PeriodicTaskRow(id=name, state=PERIODIC.queued, attempts=0))
            except IntegrityError:  # another worker made it first
                pass
        self._known.add(name)


def _now() -> datetime.datetime:
    """Now, to the microsecond (leases and backoffs may be shorter than a second)."""
    return datetime.datetime.now(datetime.UTC)


def _utc(value: datetime.datetime) -> datetime.datetime:
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
