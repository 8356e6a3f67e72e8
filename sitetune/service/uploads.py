"""Uploads to disk, within the size limit, in a per-request temporary folder."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath

from fastapi import UploadFile

from sitetune.errors import InputError, PayloadTooLarge
from sitetune.imaging.load import load_volume
from sitetune.imaging.volume import Volume
from sitetune.settings import Settings

_CHUNK = 1 << 20


@contextmanager
def temporary_folder(tmp_root: Path, prefix: str) -> Iterator[Path]:
    """A fresh folder under ``tmp_root`` for one request, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def saved_upload(
    upload: UploadFile | None, tmp_root: Path, max_bytes: int, field: str = "file"
) -> Iterator[Path]:
    """Copy ``upload`` into a fresh folder under ``tmp_root``; remove it afterwards."""
    if upload is None or not upload.filename:
        raise InputError(f"multipart field {field!r} with a file is required", code="missing_file")
    name = PurePath(upload.filename).name or "upload"
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


def load_upload(
    upload: UploadFile | None, settings: Settings, *, series: str | None = None, field: str = "file"
) -> Volume:
    """Save ``upload`` within the size limit and load it as a `Volume` (NIfTI or DICOM)."""
    tmp_root = settings.data_dir / "tmp"
    with saved_upload(upload, tmp_root, settings.max_upload_bytes, field=field) as path:
        return load_volume(path, series=series, limits=settings.zip_limits)
