"""The one durable-work primitive (sitetune.work) on SQLite and on a real PostgreSQL:
one holder per row, heartbeat leases taken over from another host, attempts with
backoff, poison rows failed with the error, periodic tasks once per period."""

from __future__ import annotations

import datetime
import threading
import time

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from sitetune.db import connect, utcnow
from sitetune.training.jobs import JobRow
from sitetune.work import Backoff, Lifecycle, Periodic, PeriodicTaskRow, WorkQueue

LIFECYCLE = Lifecycle("queued", "running", "failed", cancelled="cancelled")
SECOND = datetime.timedelta(seconds=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        return connect(f"sqlite:///{tmp_path / 'db.sqlite'}")
    return connect(request.getfixturevalue("postgres_database"))


NO_WAIT = Backoff(3, 0.0, 0.0)


def _queue(engine, lease=SECOND, backoff=NO_WAIT) -> WorkQueue:
    return WorkQueue(engine, JobRow, LIFECYCLE, lease=lease, backoff=backoff,
                     order=(JobRow.created_at, JobRow.id))  # fmt: skip


def _add(engine, *ids: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    with Session(engine) as s, s.begin():
        for n, item in enumerate(ids):
            s.add(JobRow(id=item, state="queued", base="lv-ct:1", config="{}",
                         dataset_fingerprint="x", created_by="ops", attempts=0,
                         cancel_requested=False,
                         created_at=now + datetime.timedelta(microseconds=n)))  # fmt: skip


def _row(engine, item: str) -> JobRow:
    with Session(engine) as s:
        return s.get(JobRow, item)


def test_many_workers_claiming_at_once_never_share_a_row(engine):
    ids = [f"job{n:02d}" for n in range(12)]
    _add(engine, *ids)
    queue = _queue(engine)
    taken: dict[str, list[str]] = {}

    def work(name: str) -> None:
        mine = taken.setdefault(name, [])
        while (item := queue.claim(name)) is not None:
            mine.append(item)

    threads = [threading.Thread(target=work, args=(f"host-{n}:1",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [item for items in taken.values() for item in items]
    assert sorted(claimed) == ids, "every row claimed exactly once"
    assert all(_row(engine, i).attempts == 1 for i in ids)


def test_a_worker_that_stops_heartbeating_is_taken_over_by_another_host(engine):
    _add(engine, "a")
    queue = _queue(engine, lease=datetime.timedelta(seconds=1.5))
    assert queue.claim("pod-old:41") == "a"
    assert queue.heartbeat("a", "pod-old:41")
    assert queue.expire() == [], "the lease is fresh; another host's pid cannot be checked"
    assert queue.claim("pod-new:7") is None
    time.sleep(2)  # pod-old stopped beating (killed, or its node was redeployed)
    assert queue.expire() == [("a", "queued")]
    assert queue.claim("pod-new:7") == "a", "taken over as soon as the lease ran out"
    row = _row(engine, "a")
    assert row.worker == "pod-new:7" and row.attempts == 2 and "pod-old:41" in row.error
    assert not queue.heartbeat("a", "pod-old:41"), "the old holder learns it lost the row"
    assert not queue.finish("a", "pod-old:41", "succeeded"), "and cannot write its outcome"
    assert queue.finish("a", "pod-new:7", "succeeded")
    assert _row(engine, "a").state == "succeeded"


def test_a_held_row_stays_held_while_its_lease_thread_beats(engine):
    _add(engine, "a")
    queue = _queue(engine, lease=datetime.timedelta(seconds=1))
    queue.claim("w:1")
    with queue.held("a", "w:1", every=0.2) as lease:
        time.sleep(1.6)
        assert queue.expire() == [], "beaten within the lease"
        lease.values = {"progress": '{"epoch": 3}'}
        time.sleep(0.5)
    assert not lease.lost.is_set() and _row(engine, "a").progress == '{"epoch": 3}'


def test_failed_attempts_back_off_then_fail_with_the_error(engine):
    _add(engine, "poison")
    queue = _queue(engine, backoff=Backoff(3, base_seconds=0.5, max_seconds=0.5))
    for attempt in (1, 2):
        assert queue.claim("w:1") == "poison"
        assert queue.retry("poison", "w:1", f"boom {attempt}") == "queued"
        assert queue.claim("w:1") is None, "not before its backoff"
        time.sleep(0.6)
    assert queue.claim("w:1") == "poison"
    assert queue.retry("poison", "w:1", "boom 3") == "failed"
    row = _row(engine, "poison")
    assert row.state == "failed" and row.error == "boom 3" and row.finished_at is not None
    assert queue.claim("w:1") is None


def test_a_permanent_error_fails_at_once_and_a_cancel_wins(engine):
    _add(engine, "refused", "cancelled")
    queue = _queue(engine)
    queue.claim("w:1", where=[JobRow.id == "refused"])
    assert queue.retry("refused", "w:1", "422: not a CT", permanent=True) == "failed"
    queue.claim("w:1")
    with Session(engine) as s, s.begin():
        s.execute(update(JobRow).where(JobRow.id == "cancelled").values(cancel_requested=True))
    assert queue.expire(alive=lambda worker: False) == [("cancelled", "cancelled")]


def test_a_periodic_task_runs_once_per_period_across_workers(engine):
    periodic = Periodic(engine, lease=SECOND)
    runs = []
    every = datetime.timedelta(hours=1)
    assert periodic.run_if_due("clean", "a:1", every, lambda: runs.append("a"))
    assert not periodic.run_if_due("clean", "b:1", every, lambda: runs.append("b"))
    assert runs == ["a"]
    with Session(engine) as s, s.begin():  # an hour later
        s.get(PeriodicTaskRow, "clean").next_attempt_at = utcnow()

    def broken():
        raise OSError("disk gone")

    assert periodic.run_if_due("clean", "b:1", every, broken)
    row = _get_task(engine)
    assert row.state == "queued" and "disk gone" in row.error, "a failure never ends it"


def _get_task(engine) -> PeriodicTaskRow:
    with Session(engine) as s:
        return s.get(PeriodicTaskRow, "clean")


def test_the_lease_setting_reads_its_earlier_name_too(monkeypatch):
    from sitetune.settings import Settings

    monkeypatch.setenv("SITETUNE_JOB_STALE_SECONDS", "45")
    assert Settings(_env_file=None).lease_seconds == 45.0, "a deployment's old setting holds"
    monkeypatch.setenv("SITETUNE_LEASE_SECONDS", "30")
    assert Settings(_env_file=None).lease_seconds == 30.0
