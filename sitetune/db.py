"""The database behind every durable row (registry, audit, jobs, results).

SQLAlchemy 2; a SQLite file by default (WAL mode, foreign keys on, a busy timeout so
several worker processes share it), any SQLAlchemy URL otherwise (PostgreSQL when
several machines share one state).
"""

from __future__ import annotations

import datetime

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base of all sitetune tables."""


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def iso_utc(value: datetime.datetime | None) -> str | None:
    """ISO 8601 of a stored time (naive values, as SQLite returns them, are UTC)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=datetime.UTC)).isoformat()


def make_engine(url: str) -> Engine:
    """An engine for ``url``, with SQLite tuned for several processes."""
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
