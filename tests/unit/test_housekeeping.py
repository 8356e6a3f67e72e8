"""Housekeeping keeps the retention while running and removes crash leftovers."""

from __future__ import annotations

import datetime
import os
import time

from sqlalchemy import update

from sitetune.housekeeping import Housekeeping, reclaimed_bytes
from sitetune.settings import Settings
from sitetune.stores import Stores
from sitetune.training.jobs import JobRow, JobState


def test_one_pass_removes_expired_results_leftovers_and_old_job_files(tmp_path):
    settings = Settings(data_dir=tmp_path / "state", _env_file=None, leftover_hours=1.0,
                        job_files_retention_hours=1.0)  # fmt: skip
    settings.prepare()
    stores = Stores.from_settings(settings)
    engine, results, jobs = stores.engine, stores.results, stores.jobs
    results.retention = datetime.timedelta(hours=1)
    keeper = Housekeeping(settings, stores)

    old = results.create("segment", {}, {"mask.nii.gz": lambda p: p.write_bytes(b"m" * 1000)})
    fresh = results.create("segment", {}, {"mask.nii.gz": lambda p: p.write_bytes(b"m")})
    stale_upload = settings.data_dir / "tmp" / "upload-crashed"
    stale_upload.mkdir()
    (stale_upload / "case.zip").write_bytes(b"z" * 5000)
    two_hours_ago = time.time() - 7200
    os.utime(stale_upload, (two_hours_ago, two_hours_ago))
    live_upload = settings.data_dir / "tmp" / "upload-live"
    live_upload.mkdir()

    jobs.submit("job1", "lv-ct:1", {}, "fp", "ops")
    jobs.claim("w", "host/cpu")
    jobs.finish("job1", "w", JobState.SUCCEEDED, result={})
    folder = jobs.folder("job1")
    (folder / "dataset").mkdir(parents=True)
    (folder / "dataset" / "case.nii.gz").write_bytes(b"d" * 3000)
    (folder / "checkpoint.pt").write_bytes(b"c" * 2000)
    (folder / "log.txt").write_text("epoch 1\n")
    with engine.begin() as connection:  # finished two hours ago
        connection.execute(
            update(JobRow).values(
                finished_at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2)
            )
        )

    results.retention = datetime.timedelta(seconds=0.5)
    time.sleep(1.1)
    fresh_after = results.create("segment", {}, {})
    report = keeper.run()

    assert not (results.root / old).exists() and not (results.root / fresh).exists()
    assert (results.root / fresh_after).exists()
    assert not stale_upload.exists() and live_upload.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["log.txt"]
    assert report.removed["leftovers"] == (1, 5000)
    assert report.removed["job_files"] == (2, 5000)
    assert report.removed["results"][0] == 2
    assert reclaimed_bytes(engine)["job_files"] == 5000
    assert keeper.run().removed.get("job_files", (0, 0)) == (0, 0)  # nothing twice
