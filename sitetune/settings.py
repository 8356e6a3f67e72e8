"""The one settings object (pydantic-settings), built at each entry point and passed down.

Every field can be set from the environment with the ``SITETUNE_`` prefix (e.g.
``SITETUNE_DATA_DIR=/srv/sitetune``) or from a ``.env`` file in the working directory.
Nothing here is read at import time: call `Settings()` in the serve command, the worker
or the CLI.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sitetune.imaging.archive import ZipLimits


class Settings(BaseSettings):
    """Configuration of a sitetune deployment (embedded defaults: one machine, SQLite)."""

    model_config = SettingsConfigDict(env_prefix="SITETUNE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("var"), description="root of local state (database, artifacts)")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file <data_dir>/sitetune.db"
    )
    artifact_dir: Path | None = Field(
        None, description="model weights, engines and results; default: <data_dir>/artifacts"
    )
    host: str = "127.0.0.1"
    port: int = 3000
    max_upload_bytes: int = Field(4 << 30, description="largest accepted upload (bytes)")
    zip_max_total_bytes: int = 8 << 30
    zip_max_members: int = 20_000
    zip_max_ratio: float = 200.0

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'sitetune.db').resolve()}"

    @property
    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.data_dir / "artifacts").resolve()

    @property
    def zip_limits(self) -> ZipLimits:
        return ZipLimits(
            max_total_bytes=self.zip_max_total_bytes,
            max_member_bytes=min(self.zip_max_total_bytes, 2 << 30),
            max_members=self.zip_max_members,
            max_ratio=self.zip_max_ratio,
        )

    def prepare(self) -> None:
        """Create the local state folders (called by entry points, never on import)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.resolved_artifact_dir.mkdir(parents=True, exist_ok=True)
