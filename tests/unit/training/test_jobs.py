"""The durable job store: claiming, one job per device, cancel, recovery of dead workers."""

from __future__ import annotations

import datetime
import socket
import subprocess
import sys

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from sitetune.db import connect
from sitetune.errors import Conflict, NotFound
from sitetune.training.jobs import MAX_ATTEMPTS, JobRow, JobState, JobStore

HOUR = datetime.timedelta(hours=1)


@pytest.fixture
def store(tmp_path) -> JobStore:
    return JobStore(connect(f"sqlite:///{tmp_path / 'db.sqlite'}"), tmp_path / "artifacts")


def _submit(store: JobStore, n: int = 1) -> list[str]:
    ids = []
    for _ in range(n):
        job_id = store.new_id()
        store.submit(job_id, "lv-ct:1", {"epochs": 2}, "sha256:x", "ops")
        ids.append(job_id)
    return ids


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_jobs_are_claimed_oldest_first_one_per_device(store):
    first, second = _submit(store, 2)
    assert store.claim("host:1", "host/cpu").id == first
    assert store.claim("host:2", "host/cpu") is None  # the cpu is busy
    job = store.claim("host:2", "host/cuda:0")  # another device may run the next
    assert job.id == second and job.state is JobState.RUNNING and job.attempts == 1


def test_finish_heartbeat_and_cancel(store):
    (job_id,) = _submit(store)
    store.claim("host:1", "host/cpu")
    assert store.heartbeat(job_id, "host:1", {"epoch": 1}) is False
    assert store.get(job_id).progress == {"epoch": 1}
    assert store.request_cancel(job_id).cancel_requested
    assert store.heartbeat(job_id, "host:1") is True  # the worker learns of it
    done = store.finish(job_id, "host:1", JobState.CANCELLED)
    assert done.state is JobState.CANCELLED and done.finished_at is not None
    assert store.request_cancel(job_id).state is JobState.CANCELLED  # idempotent


def test_queued_jobs_cancel_at_once_and_finished_ones_refuse(store):
    queued, finished = _submit(store, 2)
    assert store.request_cancel(queued).state is JobState.CANCELLED
    store.claim("host:1", "host/cpu")
    store.finish(finished, "host:1", JobState.SUCCEEDED, result={"version": 2})
    with pytest.raises(Conflict):
        store.request_cancel(finished)
    with pytest.raises(NotFound):
        store.get("nope")


def test_a_dead_worker_on_this_host_is_recovered_at_once(store):
    (_job_id,) = _submit(store)
    dead = f"{socket.gethostname()}:{_dead_pid()}"
    store.claim(dead, "host/cpu")
    (recovered,) = store.recover(HOUR)  # the heartbeat is fresh; the process is gone
    assert recovered.state is JobState.QUEUED and recovered.worker is None
    assert store.claim("other:1", "host/cpu").attempts == 2


def test_live_workers_are_left_alone_and_stale_ones_are_not(store):
    (_job_id,) = _submit(store)
    store.claim("elsewhere:123", "elsewhere/cpu")
    assert store.recover(HOUR) == []  # another host, fresh heartbeat
    (recovered,) = store.recover(datetime.timedelta(seconds=-1))  # any heartbeat is stale
    assert recovered.state is JobState.QUEUED


def test_gives_up_after_max_attempts_with_the_reason(store):
    (_job_id,) = _submit(store)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert store.claim(f"elsewhere:{attempt}", "elsewhere/cpu").attempts == attempt
        (job,) = store.recover(datetime.timedelta(seconds=-1))
    assert job.state is JobState.FAILED and job.finished_at is not None
    assert f"stopped during attempt {MAX_ATTEMPTS}" in job.error


def test_a_cancelled_job_of_a_dead_worker_ends_cancelled(store):
    (job_id,) = _submit(store)
    store.claim("elsewhere:1", "elsewhere/cpu")
    store.request_cancel(job_id)
    (job,) = store.recover(datetime.timedelta(seconds=-1))
    assert job.state is JobState.CANCELLED


def test_finish_needs_the_claiming_worker(store):
    (job_id,) = _submit(store)
    store.claim("host:1", "host/cpu")
    store.finish(job_id, "host:2", JobState.SUCCEEDED)  # not its job: no effect
    assert store.get(job_id).state is JobState.RUNNING


def test_a_worker_whose_job_was_taken_over_is_told_to_stop(store):
    from sitetune.training.worker import _Heartbeat

    (job_id,) = _submit(store)
    store.claim("host:1", "host/cpu")
    beat = _Heartbeat(store, job_id, "host:1")
    assert beat.still_held()
    with Session(store.engine) as s, s.begin():  # host:1 stalled past the lease; host:2 took it
        s.execute(update(JobRow).where(JobRow.id == job_id).values(worker="host:2"))
    assert store.heartbeat(job_id, "host:1") is True
    assert not beat.still_held()  # so the stalled worker registers nothing
    assert store.heartbeat(job_id, "host:2") is False  # the new owner goes on
    assert store.get(job_id).state is JobState.RUNNING
