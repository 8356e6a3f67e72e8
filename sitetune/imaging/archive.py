"""Safe reading of uploaded zip archives.

Every member name is checked before anything is read (no absolute paths, no ``..``, no
drive letters, no symbolic links), the declared sizes and compression ratios are checked
against limits, and the bytes actually inflated are counted too, because a hostile zip
can lie about its sizes in the central directory. Extraction writes only below the
destination folder and removes what it wrote when it fails.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sitetune.errors import PayloadTooLarge, UnsafeArchive, UnsupportedInput

_CHUNK = 1 << 20
# Operating-system litter that zip tools add; never data.
_IGNORED_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}


@dataclass(frozen=True)
class ZipLimits:
    """Bounds on what an uploaded zip may expand to."""

    max_total_bytes: int = 8 << 30  # 8 GiB uncompressed in all
    max_member_bytes: int = 2 << 30  # 2 GiB for any one member
    max_members: int = 20_000
    max_ratio: float = 200.0  # uncompressed / compressed, per member (zip bombs reach 1000+)


def _check_name(name: str) -> PurePosixPath:
    if "\\" in name or "\x00" in name:
        raise UnsafeArchive(f"zip entry {name!r} contains a backslash or NUL character")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and ":" in path.parts[0]):
        raise UnsafeArchive(f"zip entry {name!r} is an absolute path; use relative paths")
    if ".." in path.parts:
        raise UnsafeArchive(f"zip entry {name!r} points outside the archive ('..')")
    return path


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _is_ignored(path: PurePosixPath) -> bool:
    return any(p in _IGNORED_PARTS or p.startswith("._") for p in path.parts)


def checked_members(archive: zipfile.ZipFile, limits: ZipLimits) -> list[zipfile.ZipInfo]:
    """The archive's file members, after every name and size check has passed.

    Raises:
        UnsafeArchive: a name escapes the archive root or a member is a symbolic link.
        PayloadTooLarge: too many members, too many bytes, or a compression ratio above
            ``limits.max_ratio`` (a zip bomb).
    """
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise PayloadTooLarge(
            f"zip has {len(infos)} entries; at most {limits.max_members} are accepted"
        )
    members, total = [], 0
    for info in infos:
        path = _check_name(info.filename)
        if _is_symlink(info):
            raise UnsafeArchive(f"zip entry {info.filename!r} is a symbolic link")
        if info.is_dir() or _is_ignored(path):
            continue
        if info.file_size > limits.max_member_bytes:
            raise PayloadTooLarge(
                f"zip entry {info.filename!r} expands to {info.file_size} bytes; "
                f"at most {limits.max_member_bytes} per file are accepted"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_ratio:
            raise PayloadTooLarge(
                f"zip entry {info.filename!r} expands {ratio:.0f}-fold; at most "
                f"{limits.max_ratio:.0f}-fold is accepted (this looks like a zip bomb)"
            )
        total += info.file_size
        if total > limits.max_total_bytes:
            raise PayloadTooLarge(
                f"zip expands to more than {limits.max_total_bytes} bytes; split the upload"
            )
        members.append(info)
    return members


def _read_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """Inflate one member, failing as soon as it exceeds its declared size or ``budget``."""
    bound = min(info.file_size, budget)
    chunks, size = [], 0
    with archive.open(info) as f:
        while chunk := f.read(_CHUNK):
            size += len(chunk)
            if size > bound:
                raise PayloadTooLarge(
                    f"zip entry {info.filename!r} inflates beyond its declared size "
                    f"or the upload limit"
                )
            chunks.append(chunk)
    return b"".join(chunks)


def is_zip(path: Path | str) -> bool:
    """True when the file starts like a zip archive (local header or empty archive)."""
    with open(path, "rb") as f:
        return f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")


def open_zip(path: Path | str) -> zipfile.ZipFile:
    """Open ``path`` as a zip, mapping unreadable archives to a typed error."""
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise UnsupportedInput(f"the upload is not a readable zip archive ({exc})") from exc


def iter_zip_files(
    path: Path | str, limits: ZipLimits | None = None
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(member name, content)`` for every file in a zip, within ``limits``.

    Nothing is written to disk. Name and size checks run on the whole directory first, so
    a hostile archive fails before any member is inflated.
    """
    limits = limits or ZipLimits()
    with open_zip(path) as archive:
        members = checked_members(archive, limits)
        budget = limits.max_total_bytes
        for info in members:
            try:
                data = _read_bounded(archive, info, budget)
            except (zipfile.BadZipFile, EOFError, OSError) as exc:
                raise UnsafeArchive(
                    f"zip entry {info.filename!r} is corrupt and cannot be read ({exc})"
                ) from exc
            budget -= len(data)
            yield info.filename, data


def extract_zip(path: Path | str, destination: Path | str, limits: ZipLimits | None = None) -> Path:
    """Extract a zip below ``destination`` (created; must not exist) and return it.

    On any failure the destination folder is removed again, so nothing half-written stays.
    """
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=False)
    root = destination.resolve()
    try:
        for name, data in iter_zip_files(path, limits):
            target = (root / name).resolve()
            if root not in target.parents:  # defence in depth; names were checked already
                raise UnsafeArchive(f"zip entry {name!r} points outside the archive")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    return destination
