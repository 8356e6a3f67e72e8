"""Uploads to disk, within the size limit, in a per-request temporary folder, and the
hand-off of an uploaded image or mask to the analysis pipeline."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath

from fastapi import UploadFile

from sitetune.analysis.pipeline import LesionOptions, ThicknessOptions
from sitetune.analysis.tasks import Task
from sitetune.errors import InputError, PayloadTooLarge
from sitetune.imaging.load import load_volume
from sitetune.service.metrics import observe_stages
from sitetune.service.state import AppState

_CHUNK = 1 << 20


@contextmanager
def temporary_folder(tmp_root: Path, prefix: str) -> Iterator[Path]:
    """A fresh folder under ``tmp_root`` for one request, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def safe_name(filename: str) -> str:
    """A client's file name reduced to a plain name inside our folder: the last path
    part, characters outside ``[A-Za-z0-9._-]`` replaced, never ``.``/``..``/empty."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", PurePath(filename.replace("\\", "/")).name)[-200:]
    return name if name.strip(".") else "upload"


@contextmanager
def saved_upload(
    upload: UploadFile | None, tmp_root: Path, max_bytes: int, field: str = "file"
) -> Iterator[Path]:
    """Copy ``upload`` into a fresh folder under ``tmp_root``; remove it afterwards."""
    if upload is None or not upload.filename:
        raise InputError(f"multipart field {field!r} with a file is required", code="missing_file")
    name = safe_name(upload.filename)
    with temporary_folder(tmp_root, "upload-") as folder:
        target = folder / name
        size = 0
        with target.open("wb") as out:
            while chunk := upload.file.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"upload exceeds {max_bytes} bytes")
                out.write(chunk)
        if size == 0:
            raise InputError(f"the {field!r} upload is empty", code="empty_file")
        yield target


def analyse_upload(
    app: AppState,
    kind: str,
    task: Task,
    file: UploadFile | None,
    mask: UploadFile | None = None,
    *,
    model: str | None = None,
    version: str | None = None,
    series: str | None = None,
    thickness: ThicknessOptions | None = None,
    lesions: LesionOptions | None = None,
) -> dict:
    """Save the upload (``file`` an image, or ``mask`` a label map), run the pipeline,
    store the result (keeping a DICOM upload for the SEG/SR built on request) and return
    the response body."""
    has_file, has_mask = bool(file and file.filename), bool(mask and mask.filename)
    if task is not Task.SEGMENT and has_file == has_mask:
        raise InputError(
            "send exactly one of 'file' (an image to segment) or 'mask' (a label map)",
            code="file_or_mask",
        )
    upload, field = (mask, "mask") if has_mask else (file, "file")
    started = time.perf_counter()
    settings = app.settings
    with saved_upload(upload, settings.data_dir / "tmp", settings.max_upload_bytes, field) as path:
        volume = load_volume(
            path, series=series, limits=settings.zip_limits, image_limits=settings.image_limits
        )
        timings = {"load": round(1000 * (time.perf_counter() - started), 1)}
        analysis = app.pipeline.run(
            volume, task, model=model, version=version, mask=has_mask,
            thickness=thickness or ThicknessOptions(), lesions=lesions or LesionOptions(),
            timings_ms=timings,
        )  # fmt: skip
        body = app.results.save(analysis, kind, source=path, series=series, started=started)
    if analysis.version is not None:
        observe_stages(analysis.version, analysis.backend, analysis.timings_ms)
    return body
