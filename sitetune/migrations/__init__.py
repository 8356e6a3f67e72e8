"""Alembic migrations of the sitetune database (`sitetune.db.upgrade` runs them)."""
