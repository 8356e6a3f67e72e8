"""Stored results: a JSON summary and files (mask, maps, SEG, SR) per result id.

Rows in the database, files under ``<artifact_dir>/results/<id>/``. A result is written
to a staging folder and renamed into place before its row commits, so a reader never
sees half a result. Results older than the retention period are purged.

DICOM outputs cost more than the request that asks for a mask (a SEG per measured
phase, an SR), so they are built on first request: the DICOM upload is kept in the
result folder (``input/``, moved there, not copied), with the analysis record
(``analysis.json``: task, series, model, measurement); `AnalysisResults.dicom_file`
re-reads its headers, builds every DICOM output once under a file lock (so the SR and
the SEGs it references agree, whichever worker asked first) and keeps them.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from sqlalchemy import String, Text, delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from sitetune.analysis.outputs import build_dicom_outputs, seg_phases
from sitetune.analysis.pipeline import Analysis
from sitetune.analysis.tasks import Task
from sitetune.db import Base, UtcDateTime, utcnow
from sitetune.errors import Conflict, NotFound, SitetuneError
from sitetune.imaging.archive import ZipLimits
from sitetune.imaging.load import load_volume
from sitetune.imaging.nifti import load_nifti, save_nifti
from sitetune.imaging.seg import seg_unavailable_reason
from sitetune.imaging.volume import ImageLimits
from sitetune.models.registry import Registry

logger = logging.getLogger(__name__)

DICOM_FOLDER = "dicom"
RECORD = "analysis.json"
IMAGE = "image.nii.gz"  # the analysed image (an uploaded NIfTI is kept as it came)
IMAGE_NAMES = {".nii.gz": IMAGE, ".nii": "image.nii"}  # upload suffix -> stored name
MAP_ROUTES = {
    "thickness.nii.gz": "thickness",
    "segments.nii.gz": "segments",
    "lesions.nii.gz": "lesions",
}


class ResultRow(Base):
    __tablename__ = "results"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime.datetime] = mapped_column(UtcDateTime, index=True)
    summary: Mapped[str] = mapped_column(Text)


class ResultStore:
    """Create, read and purge results."""

    def __init__(self, engine: Engine, artifact_dir: Path, retention: datetime.timedelta) -> None:
        self.engine = engine
        self.root = Path(artifact_dir) / "results"
        self.retention = retention

    def create(
        self,
        kind: str,
        summary: dict,
        writers: dict[str, Callable[[Path], object]],
        *,
        result_id: str | None = None,
        keep: dict[str, Path] | None = None,
    ) -> str:
        """Store a result: ``writers`` map a file name to a function writing that path;
        ``keep`` maps a file name to an existing file moved into the result.

        ``summary`` gets ``result_id`` added and is returned by `summary`.
        """
        result_id = result_id or new_result_id()
        staging = self.root / ".staging" / result_id
        staging.mkdir(parents=True)
        folder = self.root / result_id
        try:
            for filename, write in writers.items():
                write(staging / filename)
            for filename, existing in (keep or {}).items():
                (staging / filename).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(existing, staging / filename)
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

    def recent(self, limit: int = 50, kind: str | None = None) -> list[dict]:
        """The newest live results, newest first: id, kind, time, model, input and the
        headline numbers (what a list of results shows; the full summary by id)."""
        cutoff = utcnow() - self.retention
        query = select(ResultRow).where(ResultRow.created_at >= cutoff)
        if kind is not None:
            query = query.where(ResultRow.kind == kind)
        query = query.order_by(ResultRow.created_at.desc()).limit(limit)
        with Session(self.engine) as s:
            rows = list(s.scalars(query))
        out = []
        for row in rows:
            summary = json.loads(row.summary)
            headline = {k: summary[k] for k in ("total_ml", "count", "thickening_pct", "labels")
                        if k in summary}  # fmt: skip
            if summary.get("ed"):
                headline["ed_median_mm"] = summary["ed"]["thickness_mm"]["median"]
            out.append({"result_id": row.id, "kind": row.kind,
                        "created_at": row.created_at.replace(tzinfo=datetime.UTC).isoformat(),
                        "model": summary.get("model"), "input": summary.get("input"),
                        **headline})  # fmt: skip
        return out

    def image(self, result_id: str) -> Path:
        """The analysed image of a result (NIfTI), or `NotFound`."""
        folder = self.folder(result_id)
        for name in IMAGE_NAMES.values():
            if (folder / name).is_file():
                return folder / name
        raise NotFound(f"result {result_id} has no stored image", code="result_file_not_found")

    def replace_summary(self, result_id: str, summary: dict) -> None:
        with Session(self.engine) as s, s.begin():
            row = update(ResultRow).where(ResultRow.id == result_id)
            s.execute(row.values(summary=json.dumps(summary)))

    def folder(self, result_id: str) -> Path:
        """The folder of a live result (`NotFound` when unknown or expired)."""
        self.summary(result_id)
        return self.root / result_id

    def file(self, result_id: str, filename: str, what: str) -> Path:
        """The path of one file of a result, or `NotFound` saying which is missing."""
        path = self.folder(result_id) / filename
        if not path.is_file():
            raise NotFound(f"result {result_id} has no {what}", code="result_file_not_found")
        return path

    @contextlib.contextmanager
    def locked(self, result_id: str) -> Iterator[Path]:
        """The result's folder, held under an exclusive lock (across processes)."""
        folder = self.folder(result_id)
        with (folder / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

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


def display_copy(volume):
    """The volume's array for the stored image: int16 when every value is a whole number
    in int16's range (CT in HU, most MR), which halves the file against float32."""
    array = np.asarray(volume.array)
    if array.dtype.kind == "f" and array.size:
        low, high = float(array.min()), float(array.max())
        if low >= -32768 and high <= 32767 and np.array_equal(array, np.round(array)):
            return volume.with_array(array.astype(np.int16))
    return volume


def new_result_id() -> str:
    return uuid.uuid4().hex


def _available(url: str, media_type: str, **extra) -> dict:
    return {"available": True, "url": url, "media_type": media_type, **extra}


def _unavailable(reason: str) -> dict:
    return {"available": False, "reason": reason}


def predicted_outputs(result_id: str, analysis: Analysis) -> dict:
    """The response's ``outputs``: each output available (with its URL) or not, and why.
    SEG and SR are built on first request; their availability is known before."""
    base = f"/v1/results/{result_id}"
    out = {
        "summary": _available(base, "application/json"),
        "mask": _available(f"{base}/mask", "application/gzip"),
    }
    if analysis.version is None:
        out["image"] = _unavailable("the input was a label map, not an image")
    else:
        out["image"] = _available(f"{base}/image", "application/gzip")
    for filename, route in MAP_ROUTES.items():
        if filename in analysis.maps:
            out[route] = _available(f"{base}/{route}", "application/gzip")
    out |= _bullseye_outputs(base, analysis)
    volume = analysis.volume
    if analysis.version is None:
        reason = "the input was a label map, not an image segmented by a model"
        return out | {"seg": _unavailable(reason), "sr": _unavailable(reason)}
    if volume.dicom is None:
        reason = "the input was NIfTI; SEG and SR reference DICOM source images"
        return out | {"seg": _unavailable(reason), "sr": _unavailable(reason)}
    seg_reason = seg_unavailable_reason(volume.phase(0))
    phases = [
        (p.role or str(p.phase)).lower()
        for p in seg_phases(analysis.task, volume.n_phases, analysis.measurement)
    ]
    out["seg"] = (
        _unavailable(seg_reason)
        if seg_reason
        else _available(f"{base}/seg", "application/dicom", phases=phases)
    )
    out["sr"] = _available(f"{base}/sr", "application/dicom")
    return out


def _bullseye_outputs(base: str, analysis: Analysis) -> dict:
    if not analysis.measurement.get("segments"):
        return {}
    return {
        "bullseye": _available(f"{base}/bullseye.png", "image/png"),
        "bullseye_svg": _available(f"{base}/bullseye.svg", "image/svg+xml"),
    }


class AnalysisResults:
    """Analyses stored as results, and their DICOM outputs built on first request."""

    def __init__(
        self,
        store: ResultStore,
        registry: Registry,
        limits: ZipLimits | None,
        image_limits: ImageLimits | None = None,
    ) -> None:
        self.store, self.registry, self.limits = store, registry, limits
        self.image_limits = image_limits

    def save(
        self,
        analysis: Analysis,
        kind: str,
        *,
        source: Path | None = None,
        series: str | None = None,
        started: float | None = None,
    ) -> dict:
        """Store ``analysis`` (the label map, its maps, the record; the DICOM ``source``
        upload moved in when SEG/SR may be asked for) and return the response body."""
        save_started = time.perf_counter()
        result_id = new_result_id()
        volume = analysis.volume
        writers = {"mask.nii.gz": lambda path: save_nifti(volume.with_array(analysis.labels), path)}
        for filename, array in analysis.maps.items():
            writers[filename] = lambda path, array=array: save_nifti(volume.with_array(array), path)
        keep = {}
        if analysis.version is not None:  # the image the mask was made on, for viewers
            nifti_source = source is not None and volume.dicom is None and Path(source).is_file()
            upload = Path(source).name.lower() if nifti_source else ""
            kept = next((n for suffix, n in IMAGE_NAMES.items() if upload.endswith(suffix)), None)
            if kept is not None:
                keep[kept] = Path(source)
            else:
                writers[IMAGE] = lambda path: save_nifti(display_copy(volume), path)
        if source is not None and volume.dicom is not None and analysis.version is not None:
            keep[f"input/{Path(source).name}"] = Path(source)
            record = {
                "task": analysis.task.value,
                "series": series,
                "input": f"input/{Path(source).name}",
                "model": {"name": analysis.version.name, "version": analysis.version.version},
                "measurement": analysis.measurement,
                "provenance": analysis.provenance,
            }
            writers[RECORD] = lambda path: path.write_text(json.dumps(record))
        timings = analysis.timings_ms
        summary = {
            **analysis.model_summary(),
            **analysis.measurement,
            "input": analysis.input_summary(),
            "outputs": predicted_outputs(result_id, analysis),
            "provenance": analysis.provenance,
            "timings_ms": timings,
        }
        self.store.create(kind, summary, writers, result_id=result_id, keep=keep)
        timings["save"] = round(1000 * (time.perf_counter() - save_started), 1)
        if started is not None:
            timings["total"] = round(1000 * (time.perf_counter() - started), 1)
        return {"result_id": result_id, **summary}

    def bullseye(
        self, result_id: str, phase: str = "ed", value: str = "thickness", image_format="png"
    ) -> bytes:
        """The AHA bullseye of a wall-thickness result: per-segment median thickness at
        ``phase`` (``ed`` / ``es``), or ``value="thickening"`` (ES vs ED, %).

        Raises:
            NotFound: unknown result. Conflict: the result has no segments
                (``output_unavailable``, with the reason).
        """
        from sitetune.analysis.bullseye import draw_bullseye

        segments = self.store.summary(result_id).get("segments")
        if not segments:
            raise Conflict(
                f"result {result_id} has no AHA segments (a wall-thickness result has them)",
                code="output_unavailable",
            )
        if value == "thickening":
            values = {s["id"]: s.get("thickening_pct") for s in segments}
            title, unit = "Wall thickening ES vs ED (median)", "%"
        else:
            values = {s["id"]: (s.get(phase) or {}).get("median") for s in segments}
            title, unit = f"{phase.upper()} wall thickness (segment median)", "mm"
        if all(v is None for v in values.values()):
            raise Conflict(
                f"result {result_id} has no {value} at {phase.upper()}", code="output_unavailable"
            )
        picture, _ = draw_bullseye(values, title=title, unit=unit, image_format=image_format)
        return picture

    def dicom_file(self, result_id: str, kind: str, phase: str | None = None) -> Path:
        """The SEG (of ``phase``: ``ed``, ``es`` or an index; default the first) or the SR
        of a result, built on first request.

        Raises:
            NotFound: unknown result, or no SEG of that phase.
            Conflict: the output cannot exist for this result (``output_unavailable``,
                with the reason).
        """
        summary = self.store.summary(result_id)
        legacy = self.store.root / result_id / "seg.dcm"  # results stored before SEGs were lazy
        if kind == "seg" and "outputs" not in summary and legacy.is_file():
            return legacy
        predicted = summary.get("outputs", {}).get(kind)
        if predicted is not None and not predicted["available"]:
            raise Conflict(
                f"result {result_id} has no {kind.upper()}: {predicted['reason']}",
                code="output_unavailable",
            )
        manifest = self._manifest(result_id, summary)
        if kind in manifest["unavailable"]:
            raise Conflict(
                f"result {result_id} has no {kind.upper()}: {manifest['unavailable'][kind]}",
                code="output_unavailable",
            )
        files = [(n, f) for n, f in manifest["files"].items() if f["kind"] == kind]
        if not files:
            raise Conflict(f"result {result_id} has no {kind.upper()}", code="output_unavailable")
        if phase is not None:
            chosen = [(n, f) for n, f in files if f.get("phase") == phase.lower()]
            if not chosen:
                raise NotFound(
                    f"result {result_id} has no SEG of phase {phase!r}; phases: "
                    f"{[f.get('phase') for _, f in files]}",
                    code="result_file_not_found",
                )
            files = chosen
        return self.store.root / result_id / DICOM_FOLDER / files[0][0]

    def _manifest(self, result_id: str, summary: dict) -> dict:
        with self.store.locked(result_id) as folder:
            path = folder / DICOM_FOLDER / "manifest.json"
            if path.is_file():
                return json.loads(path.read_text())
            manifest = self._build(folder)
            staging = folder / f".{DICOM_FOLDER}-{uuid.uuid4().hex}"
            staging.mkdir()
            try:
                for name, dataset in manifest.pop("datasets").items():
                    dataset.save_as(staging / name)
                (staging / "manifest.json").write_text(json.dumps(manifest))
                staging.rename(folder / DICOM_FOLDER)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        if manifest["unavailable"]:  # what the build found out, for GET /v1/results/{id}
            outputs = summary.get("outputs", {})
            for kind, reason in manifest["unavailable"].items():
                outputs[kind] = _unavailable(reason)
            self.store.replace_summary(result_id, summary)
        return manifest

    def _build(self, folder: Path) -> dict:
        """Every DICOM output of the stored analysis in ``folder``."""
        record_path = folder / RECORD
        if not record_path.is_file():
            reason = "the result has no DICOM source stored"
            return {"datasets": {}, "files": {}, "unavailable": {"seg": reason, "sr": reason}}
        record = json.loads(record_path.read_text())
        try:
            source = load_volume(
                folder / record["input"],
                series=record["series"],
                limits=self.limits,
                decode=False,
                image_limits=self.image_limits,
            )
            labels = load_nifti(folder / "mask.nii.gz").array
            version = self.registry.get(record["model"]["name"], int(record["model"]["version"]))
        except SitetuneError as error:
            reason = f"the stored input cannot be read again ({error.message})"
            return {"datasets": {}, "files": {}, "unavailable": {"seg": reason, "sr": reason}}
        outputs = build_dicom_outputs(
            source, labels, version, Task(record["task"]), record["measurement"],
            record.get("provenance"),
        )  # fmt: skip
        files = {
            name: {"kind": outputs.kinds[name], "phase": outputs.phases.get(name)}
            for name in outputs.files
        }
        return {"datasets": outputs.files, "files": files, "unavailable": outputs.unavailable}
