"""Stored results: a JSON summary and files (mask, SEG, SR, maps) per result id.

Rows in the database, files under ``<artifact_dir>/results/<id>/``. A result is written
to a staging folder and renamed into place before its row commits, so a reader never
sees half a result. Results older than the retention period are purged.
"""

from __future__ import annotations

import datetime
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import DateTime, String, Text, delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from sitetune.db import Base, utcnow
from sitetune.errors import NotFound
from sitetune.imaging.volume import Volume
from sitetune.models.registry import ModelVersion


class ResultRow(Base):
    __tablename__ = "results"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), index=True)
    summary: Mapped[str] = mapped_column(Text)


class ResultStore:
    """Create, read and purge results."""

    def __init__(self, engine: Engine, artifact_dir: Path, retention: datetime.timedelta) -> None:
        self.engine = engine
        self.root = Path(artifact_dir) / "results"
        self.retention = retention
        Base.metadata.create_all(engine, tables=[ResultRow.__table__])

    def create(self, kind: str, summary: dict, writers: dict[str, Callable[[Path], object]]) -> str:
        """Store a result: ``writers`` map a file name to a function writing that path.

        ``summary`` gets ``result_id`` added and is returned by `summary`.
        """
        result_id = uuid.uuid4().hex
        staging = self.root / ".staging" / result_id
        staging.mkdir(parents=True)
        folder = self.root / result_id
        try:
            for filename, write in writers.items():
                write(staging / filename)
            summary = {"result_id": result_id, **summary}
            staging.rename(folder)
            with Session(self.engine) as s, s.begin():
                s.add(
                    ResultRow(
                        id=result_id, kind=kind, created_at=utcnow(), summary=json.dumps(summary)
                    )
                )
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return result_id

    def summary(self, result_id: str) -> dict:
        with Session(self.engine) as s:
            row = s.get(ResultRow, result_id)
            if row is None or self._expired(row.created_at):
                raise NotFound(
                    f"no result {result_id!r} (unknown, or older than the "
                    f"{self.retention} retention)",
                    code="result_not_found",
                )
            return json.loads(row.summary)

    def file(self, result_id: str, filename: str, what: str) -> Path:
        """The path of one file of a result, or `NotFound` saying which is missing."""
        self.summary(result_id)
        path = self.root / result_id / filename
        if not path.is_file():
            raise NotFound(f"result {result_id} has no {what}", code="result_file_not_found")
        return path

    def _expired(self, created_at: datetime.datetime) -> bool:
        return created_at.replace(tzinfo=datetime.UTC) < utcnow() - self.retention

    def purge_expired(self) -> int:
        """Delete results older than the retention period; returns how many."""
        cutoff = utcnow() - self.retention
        with Session(self.engine) as s, s.begin():
            ids = list(s.scalars(select(ResultRow.id).where(ResultRow.created_at < cutoff)))
            s.execute(delete(ResultRow).where(ResultRow.id.in_(ids)))
        for result_id in ids:
            shutil.rmtree(self.root / result_id, ignore_errors=True)
        return len(ids)


def input_summary(volume: Volume) -> dict:
    """The ``input`` part of a result summary: the grid and where it came from."""
    return {
        "shape": list(volume.array.shape),
        "spacing_mm": [round(s, 6) for s in volume.spacing],
        "phases": volume.n_phases,
        "modality": volume.modality,
        "format": "dicom" if volume.dicom is not None else "nifti",
    }


def model_summary(version: ModelVersion | None, backend: str | None) -> dict:
    """Which model and backend produced a result (``None`` for a mask upload)."""
    if version is None:
        return {"model": None, "backend": None}
    return {"model": {"name": version.name, "version": str(version.version)}, "backend": backend}
