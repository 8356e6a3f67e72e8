"""The schema lives in the Alembic migrations: they build exactly the tables the code
maps, upgrade a database of the previous release with its data kept (SQLite and a real
PostgreSQL), and ``sitetune db upgrade`` does it by hand."""

from __future__ import annotations

import datetime
import subprocess
import sys
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

import sitetune.analysis.results
import sitetune.housekeeping
import sitetune.models.registry
import sitetune.pacs.store
import sitetune.service.principals
import sitetune.training.jobs
import sitetune.work  # noqa: F401  (every mapped table)
from sitetune.db import (
    FIRST_REVISION,
    SCHEMA_REVISION,
    Base,
    connect,
    current_revision,
    head_revision,
    make_engine,
    upgrade,
)
from sitetune.pacs.store import PacsStore
from sitetune.training.jobs import JobStore


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return request.getfixturevalue("postgres_database")


def test_the_release_names_the_head_of_its_migrations(tmp_path):
    assert head_revision() == SCHEMA_REVISION
    engine = connect(f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert current_revision(engine) == SCHEMA_REVISION


def test_the_migrations_build_exactly_the_mapped_schema(url):
    engine = make_engine(url)
    assert upgrade(engine) == (None, head_revision())
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], "a model changed without a migration (alembic revision --autogenerate)"


def _release_0_1_0_data(engine) -> None:
    """Rows as release 0.1.0 wrote them (its schema has no lease columns)."""
    now = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
    with engine.begin() as c:
        c.execute(
            text("INSERT INTO jobs (id, state, base, config, dataset_fingerprint, created_by,"
                 " created_at, attempts, cancel_requested, worker, heartbeat_at) VALUES"
                 " ('j1', 'running', 'lv-ct:1', '{\"epochs\": 2}', 'sha256:x', 'ops', :t, 1,"
                 " false, 'old-host:9', :t)"),
            {"t": now},
        )  # fmt: skip
        c.execute(
            text("INSERT INTO pacs_analyses (id, state, route, model, study_uid, series_uids,"
                 " created_at, attempts, worker) VALUES ('a1', 'running', 'cardiac', 'lv-ct',"
                 " '1.2', '[\"1.2.3\"]', :t, 1, 'old-host:9')"),
            {"t": now},
        )  # fmt: skip
        c.execute(
            text("INSERT INTO pacs_deliveries (id, analysis_id, destination, state, files,"
                 " attempts, created_at, next_attempt_at) VALUES ('d1', 'a1', 'pacs',"
                 " 'pending', '[]', 2, :t, :t)"),
            {"t": now},
        )  # fmt: skip


def test_a_database_of_the_last_release_is_upgraded_with_its_data(url, tmp_path):
    engine = make_engine(url)
    upgrade(engine, FIRST_REVISION)
    _release_0_1_0_data(engine)
    assert upgrade(engine) == (FIRST_REVISION, head_revision())
    jobs, pacs = JobStore(engine, tmp_path), PacsStore(engine, tmp_path)
    job = jobs.get("j1")
    assert job.config == {"epochs": 2} and job.worker == "old-host:9"
    assert job.created_at == datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
    assert pacs.delivery("d1").attempts == 2
    # the work the old release left running is taken over under the new rules
    (recovered,) = jobs.recover(datetime.timedelta(seconds=1))
    assert recovered.state.value == "queued"
    assert pacs.recover(alive=lambda worker: True) == ["a1"], "no heartbeat: its lease is over"
    assert pacs.claim("new-host:1").id == "a1"


def test_a_database_made_before_migrations_is_stamped_then_upgraded(tmp_path):
    """0.1.0 made its tables without Alembic: no alembic_version table."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine, FIRST_REVISION)
    _release_0_1_0_data(engine)
    with engine.begin() as c:
        c.execute(text("DROP TABLE alembic_version"))
    assert current_revision(engine) is None
    assert upgrade(engine) == (FIRST_REVISION, head_revision())
    assert JobStore(engine, tmp_path).get("j1").base == "lv-ct:1"


def test_processes_starting_at_once_upgrade_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    results = []
    threads = [threading.Thread(target=lambda: results.append(upgrade(make_engine(url))))
               for _ in range(4)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count((None, head_revision())) == 1, results
    assert results.count((head_revision(), head_revision())) == 3, results
    assert "periodic_tasks" in inspect(make_engine(url)).get_table_names()


def test_sitetune_db_upgrade_on_the_command_line(tmp_path):
    env = {"SITETUNE_DATA_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-c", "import sys; from sitetune.processes import "
               "sitetune_command as c; sys.exit(c(sys.argv[1:]))"]  # fmt: skip
    first = subprocess.run([*command, "db", "upgrade"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert f"empty -> {head_revision()}" in first.stdout
    again = subprocess.run([*command, "db", "upgrade"], env=env, capture_output=True, text=True)
    assert f"at {head_revision()} already" in again.stdout
    current = subprocess.run([*command, "db", "current"], env=env, capture_output=True, text=True)
    assert f"this release: {head_revision()}" in current.stdout
