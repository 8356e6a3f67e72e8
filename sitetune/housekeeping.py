"""Periodic clean-up: retention kept while the service runs, crash leftovers removed.

One pass (`Housekeeping.run`), every ``housekeeping_seconds``, by whichever PACS worker
finds it due first (a periodic task of `sitetune.work`: once per period however many
workers and hosts share the database; ``sitetune-serve`` always supervises one), removes:

- results older than ``results_retention_hours`` (rows and files, `ResultStore`), and the
  PACS files of analyses finished that long ago (`PacsStore.purge_expired`);
- temporary uploads and STOW-RS parts under ``<data_dir>/tmp`` and staging folders of the
  result, registry and job stores older than ``leftover_hours`` (a request or a job that
  died left them; a live one is younger);
- the dataset and checkpoints of jobs finished more than ``job_files_retention_hours``
  ago (their log and row stay).

Each pass is recorded (``housekeeping`` table: when, what, bytes reclaimed), so any
worker's ``/metrics`` can export the total (``sitetune_housekeeping_reclaimed_bytes``).
"""

from __future__ import annotations

import datetime
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import BigInteger, Integer, String, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from sitetune.db import Base, UtcDateTime, utcnow

logger = logging.getLogger(__name__)
JOB_KEEP = {"log.txt"}  # what a finished job's folder keeps after its retention


class HousekeepingRow(Base):
    __tablename__ = "housekeeping"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime.datetime] = mapped_column(UtcDateTime, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    items: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)


@dataclass
class Report:
    """What one pass removed: per kind, (items, bytes)."""

    removed: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, kind: str, paths: list[Path]) -> None:
        sizes = [_size(p) for p in paths]
        for path in paths:
            _remove(path)
        items, total = self.removed.get(kind, (0, 0))
        self.removed[kind] = (items + len(paths), total + sum(sizes))

    @property
    def bytes(self) -> int:
        return sum(b for _, b in self.removed.values())


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _older_than(folder: Path, cutoff: float) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.stat().st_mtime < cutoff]


class Housekeeping:
    """One clean-up pass over the stores of a deployment."""

    def __init__(self, settings, stores) -> None:
        """Over the `sitetune.stores.Stores` of a deployment (it cleans all of them)."""
        self.settings, self.engine = settings, stores.engine
        self.results, self.pacs, self.jobs = stores.results, stores.pacs, stores.jobs

    def run(self) -> Report:
        report = Report()
        hours = datetime.timedelta(hours=self.settings.results_retention_hours)
        before = _size(self.results.root) if self.results.root.is_dir() else 0
        purged = self.results.purge_expired()
        after = _size(self.results.root) if self.results.root.is_dir() else 0
        if purged:
            report.removed["results"] = (purged, max(before - after, 0))
        pacs_root = self.pacs.root
        before = _size(pacs_root) if pacs_root.is_dir() else 0
        folders = self.pacs.purge_expired(hours)
        if folders:
            after = _size(pacs_root) if pacs_root.is_dir() else 0
            report.removed["pacs"] = (folders, max(before - after, 0))
        cutoff = time.time() - 3600 * self.settings.leftover_hours
        artifacts = self.settings.resolved_artifact_dir
        leftovers = [
            *_older_than(self.settings.data_dir / "tmp", cutoff),
            *_older_than(self.results.root / ".staging", cutoff),
            *_older_than(artifacts / "models" / ".staging", cutoff),
            *_older_than(artifacts / "jobs" / ".staging", cutoff),
        ]
        report.add("leftovers", leftovers)
        report.add("job_files", self._finished_job_files())
        self._record(report)
        if report.removed:
            logger.info("housekeeping removed %s", report.removed)
        return report

    def _finished_job_files(self) -> list[Path]:
        cutoff = utcnow() - datetime.timedelta(hours=self.settings.job_files_retention_hours)
        paths = []
        for job in self.jobs.list(limit=100_000):
            when = job.finished_at
            if when is None:
                continue
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.UTC)
            folder = self.jobs.folder(job.id)
            if when < cutoff and folder.is_dir():
                paths.extend(p for p in folder.iterdir() if p.name not in JOB_KEEP)
        return paths

    def _record(self, report: Report) -> None:
        now = utcnow()
        with Session(self.engine) as s, s.begin():
            for kind, (items, size) in report.removed.items():
                if items:
                    s.add(HousekeepingRow(at=now, kind=kind, items=items, bytes=size))


def reclaimed_bytes(engine: Engine) -> dict[str, int]:
    """Bytes housekeeping reclaimed so far, per kind (for ``/metrics``)."""
    total = func.sum(HousekeepingRow.bytes)
    with Session(engine) as s:
        rows = s.execute(select(HousekeepingRow.kind, total).group_by(HousekeepingRow.kind))
        return {kind: int(size or 0) for kind, size in rows}
