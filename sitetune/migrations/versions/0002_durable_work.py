"""One durable-work primitive (`sitetune.work`): every kind of work has a worker, a
heartbeat (its lease), attempts and a time before which it is not retried.

- jobs: ``next_attempt_at`` (retry backoff);
- pacs_analyses: ``heartbeat_at`` (an analysis was alive by ``host:pid`` only), and
  ``next_attempt_at``;
- pacs_deliveries: ``worker`` and ``heartbeat_at`` (a delivery is claimed, ``sending``,
  so two PACS workers never send the same one);
- periodic_tasks (new): the clean-up and any other periodic work, claimed when due.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("next_attempt_at", sa.DateTime(timezone=True)))
    op.add_column("pacs_analyses", sa.Column("heartbeat_at", sa.DateTime(timezone=True)))
    op.add_column("pacs_analyses", sa.Column("next_attempt_at", sa.DateTime(timezone=True)))
    op.add_column("pacs_deliveries", sa.Column("worker", sa.String(length=120)))
    op.add_column("pacs_deliveries", sa.Column("heartbeat_at", sa.DateTime(timezone=True)))
    op.create_table(
        "periodic_tasks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("worker", sa.String(length=120), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("periodic_tasks")
    with op.batch_alter_table("pacs_deliveries") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("worker")
    with op.batch_alter_table("pacs_analyses") as batch:
        batch.drop_column("next_attempt_at")
        batch.drop_column("heartbeat_at")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("next_attempt_at")
