"""The database behind every durable row (registry, audit, principals, results, jobs,
PACS work), and its schema.

SQLAlchemy 2; a SQLite file by default (WAL mode, foreign keys on, a busy timeout so
several worker processes share it), any SQLAlchemy URL otherwise (PostgreSQL when
several machines share one state). The schema is made and changed only by the Alembic
migrations in ``sitetune/migrations/``: `upgrade` runs them under a lock (a file lock
beside a SQLite file, an advisory lock on PostgreSQL), so the serve command and any
worker may start at once; ``sitetune db upgrade`` runs them by hand.

    sitetune db upgrade     # bring the database of the settings to this release's schema
    sitetune db current     # the revision it is at, and this release's
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from sqlalchemy import DateTime, Engine, create_engine, event, inspect, text
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

logger = logging.getLogger(__name__)
FIRST_REVISION = "0001"  # the schema of the release before migrations (0.1.0)
SCHEMA_REVISION = "0002"  # this release's: the head of sitetune/migrations (a test checks)
ADVISORY_LOCK = 0x5173_7475  # PostgreSQL advisory lock key of schema upgrades


class Base(DeclarativeBase):
    """Declarative base of all sitetune tables."""


class UtcDateTime(TypeDecorator):
    """A timestamp stored in UTC and read back timezone-aware (SQLite keeps no zone: its
    naive values are UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return value.astimezone(datetime.UTC)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=datetime.UTC)
        return value.astimezone(datetime.UTC)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def iso_utc(value: datetime.datetime | None) -> str | None:
    """ISO 8601 of a stored time (naive values, as SQLite returns them, are UTC)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=datetime.UTC)).isoformat()


def make_engine(url: str) -> Engine:
    """An engine for ``url``, with SQLite tuned for several processes (no schema change:
    see `connect`)."""
    sqlite = url.startswith("sqlite")
    engine = create_engine(
        url, connect_args={"timeout": 30} if sqlite else {}, pool_pre_ping=not sqlite
    )
    if sqlite:

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    return engine


def connect(url: str) -> Engine:
    """An engine for ``url`` whose database is at this release's schema (upgraded first
    when it is behind: every process wires its stores through this). At the schema
    already, one SELECT and no Alembic import (it would cost each process ~15 MB)."""
    engine = make_engine(url)
    if _stored_revision(engine) != SCHEMA_REVISION:
        upgrade(engine)
    return engine


def _stored_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception:  # no such table yet (an empty database, or one of release 0.1.0)
        return None


def _alembic_config(connection=None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("sitetune") / "migrations"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The revision of this release's schema."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision a database is at (None: no sitetune schema, or one made before
    migrations; see `upgrade`)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _schema_lock(engine: Engine):
    """One schema upgrade at a time across processes and machines."""
    if engine.dialect.name == "sqlite":
        from filelock import FileLock

        database = engine.url.database
        if not database or database == ":memory:":
            yield
            return
        with FileLock(f"{Path(database).resolve()}.upgrade.lock", timeout=300):
            yield
    elif engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK})
                connection.commit()
    else:
        yield


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate the database to ``revision`` (this release's schema by default), under a
    lock; returns (revision before, revision after). A database made before migrations
    existed (tables, no ``alembic_version``) is stamped as `FIRST_REVISION` first."""
    from alembic import command

    with _schema_lock(engine):
        before = current_revision(engine)
        with engine.begin() as connection:
            config = _alembic_config(connection)
            if before is None and inspect(connection).has_table("model_versions"):
                command.stamp(config, FIRST_REVISION)
                before = FIRST_REVISION
                logger.info("database of release 0.1.0 found: stamped %s", FIRST_REVISION)
            command.upgrade(config, revision)
        after = current_revision(engine)
    if before != after:
        logger.info("database schema upgraded from %s to %s", before, after)
    return before, after


def main(argv: list[str] | None = None) -> int:
    """``sitetune db upgrade|current``: the schema of the settings' database."""
    parser = argparse.ArgumentParser(prog="sitetune db", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("upgrade", help="migrate the database to this release's schema")
    commands.add_parser("current", help="the revision the database is at, and this release's")
    args = parser.parse_args(argv)
    from sitetune.settings import Settings

    settings = Settings()
    settings.prepare()
    engine = make_engine(settings.resolved_database_url)
    where = engine.url.render_as_string(hide_password=True)
    if args.command == "upgrade":
        before, after = upgrade(engine)
        print(f"{where}: {before or 'empty'} -> {after}" if before != after else
              f"{where}: at {after} already")  # fmt: skip
    else:
        print(f"{where}: at {current_revision(engine) or 'no revision'}; this release: "
              f"{head_revision()}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
