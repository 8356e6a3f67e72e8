"""Alembic environment: migrations run on the connection `sitetune.db.upgrade` hands in
(``config.attributes["connection"]``), or on ``sqlalchemy.url`` for the alembic CLI."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTERs by copy
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    with create_engine(config.get_main_option("sqlalchemy.url")).connect() as connection:
        _run(connection)
