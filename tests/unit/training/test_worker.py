"""The fine-tune worker's loop on the durable-work primitive (real SQLite): a job row no
code can read is a poison item that ends ``failed`` after its attempts, and the loop goes
on to the next job meanwhile."""

from __future__ import annotations

import threading
import time

from sqlalchemy import update
from sqlalchemy.orm import Session

from sitetune.settings import Settings
from sitetune.training.jobs import JobRow, JobState
from sitetune.training.worker import Worker


def test_a_poison_job_fails_after_its_attempts_and_the_loop_goes_on(tmp_path):
    settings = Settings(data_dir=tmp_path / "state", _env_file=None, lease_seconds=0.5,
                        worker_poll_seconds=0.05)  # fmt: skip
    settings.prepare()
    worker = Worker(settings)
    store = worker.store
    store.submit("poison", "lv-ct:1", {}, "sha256:x", "ops")
    with Session(store.engine) as s, s.begin():  # a row no code can read back
        s.execute(update(JobRow).where(JobRow.id == "poison").values(config="{not json"))
    store.submit("unknown-base", "no-such-model:1", {}, "sha256:y", "ops")
    store.folder("unknown-base").mkdir(parents=True)
    loop = threading.Thread(target=worker.serve_forever)
    loop.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with Session(store.engine) as s:
                states = {r.id: r.state for r in s.query(JobRow)}
            if states == {"poison": "failed", "unknown-base": "failed"}:
                break
            time.sleep(0.1)
        assert loop.is_alive(), "nothing a job does stops the loop"
    finally:
        worker.stopping.set()
        loop.join(30)
    assert states == {"poison": "failed", "unknown-base": "failed"}
    with Session(store.engine) as s:
        poison = s.get(JobRow, "poison")
        assert poison.attempts == 3 and "stopped during attempt 3" in poison.error
    other = store.get("unknown-base")
    assert other.state is JobState.FAILED and "no-such-model" in other.error
