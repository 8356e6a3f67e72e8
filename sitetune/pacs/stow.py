"""STOW-RS (DICOM PS3.18 10.5): the request body streamed to disk, each part checked, and
the Store Instances Response.

- The request must be ``multipart/related`` with ``type="application/dicom"`` (or no
  type) and a boundary; any boundary form (quoted or not) is accepted. Otherwise 415
  (wrong media type) or 400 (no boundary, malformed body).
- Parts are written to files as they arrive: a study is never held in memory; the body
  is limited to ``max_bytes`` (413 beyond).
- A part whose Content-Type is not ``application/dicom`` makes the whole request 415
  (PS3.18: the origin server does not support that media type); nothing is stored.
- A part that is not a readable instance (not DICOM, no SOP Class / Instance / Study /
  Series UID, pixel data shorter than its rows x columns x frames say, another study than
  the one in the URL) is listed in FailedSOPSequence with a failure reason, and the
  other parts are stored: 200 when all were stored, 202 when some were, 409 when none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from python_multipart.multipart import MultipartParser, parse_options_header

from sitetune.dicomweb import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH,
    DICOM_MEDIA_TYPE,
    UID_PATTERN,
)
from sitetune.errors import InputError, PayloadTooLarge, UnsupportedInput
from sitetune.imaging.dicom import check_inflation

PIXEL_DATA = 0x7FE00010
_DEFER_BYTES = 4096  # larger values (pixel data) are left in the file


@dataclass
class ReceivedPart:
    """One body part, saved under the request's temporary folder."""

    path: Path
    content_type: str | None
    size: int = 0


@dataclass
class CheckedInstance:
    """A part after checking: the instance's identity, or why it failed."""

    part: ReceivedPart
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_uid: str = ""
    series_uid: str = ""
    failure: int | None = None
    reason: str = ""
    dataset: Dataset | None = field(default=None, repr=False)  # header only


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary of a STOW-RS request, after checking its media type."""
    if not content_type:
        raise UnsupportedInput(
            'STOW-RS needs Content-Type: multipart/related; type="application/dicom"',
            code="unsupported_media_type",
        )
    media, options = parse_options_header(content_type)
    options = {k.decode().lower(): v.decode() for k, v in options.items()}
    if media.decode().lower() != "multipart/related":
        raise UnsupportedInput(
            f"STOW-RS needs multipart/related, got {media.decode()!r}",
            code="unsupported_media_type",
        )
    part_type = options.get("type", DICOM_MEDIA_TYPE).strip('"').lower()
    if part_type != DICOM_MEDIA_TYPE:
        raise UnsupportedInput(
            f'only type="application/dicom" parts are accepted, got {part_type!r} '
            "(metadata + bulk data uploads are not supported)",
            code="unsupported_media_type",
        )
    boundary = options.get("boundary", "").strip('"')
    if not boundary:
        raise InputError("multipart/related without a boundary", code="no_boundary")
    return boundary.encode("latin-1")


async def receive_parts(
    chunks: AsyncIterator[bytes], boundary: bytes, folder: Path, max_bytes: int
) -> list[ReceivedPart]:
    """Stream a multipart body into one file per part under ``folder``."""
    parts: list[ReceivedPart] = []
    state = {"header": b"", "value": b"", "headers": {}, "out": None, "ended": False}

    def on_part_begin() -> None:
        state["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["header"].decode("latin-1").lower()] = state["value"].decode(
            "latin-1"
        )
        state["header"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        content_type = state["headers"].get("content-type")
        media = parse_options_header(content_type)[0].decode().lower() if content_type else None
        part = ReceivedPart(folder / f"part-{len(parts):06d}.dcm", media)
        parts.append(part)
        state["out"] = part.path.open("wb")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["out"].write(data[start:end])
        parts[-1].size += end - start

    def on_part_end() -> None:
        state["out"].close()
        state["out"] = None

    def on_end() -> None:
        state["ended"] = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLarge(f"STOW-RS body exceeds {max_bytes} bytes")
            parser.write(chunk)
        parser.finalize()
    except (PayloadTooLarge, InputError):
        raise
    except Exception as error:  # the parser's own errors: a malformed body
        raise InputError(f"malformed multipart body: {error}", code="bad_multipart") from None
    finally:
        if state["out"] is not None:
            state["out"].close()
    if not state["ended"]:
        raise InputError("multipart body ends before its closing boundary", code="bad_multipart")
    if not parts:
        raise InputError("the multipart body has no parts", code="no_parts")
    return parts


def _expected_pixel_bytes(ds: Dataset) -> int | None:
    """Bytes that native (uncompressed) pixel data must hold; None when encapsulated."""
    if PIXEL_DATA not in ds or ds.file_meta.TransferSyntaxUID.is_compressed:
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    bits = int(ds.BitsAllocated)
    total_bits = int(ds.Rows) * int(ds.Columns) * samples * frames * bits
    return (total_bits + 7) // 8


def _pixel_bytes_present(ds: Dataset, path: Path) -> int:
    """Bytes of pixel data actually in the file (without reading them: a deferred value
    runs from its offset to the end of the file, where Pixel Data sits)."""
    raw = ds.get_item(PIXEL_DATA)
    if raw is None:
        return 0
    if raw.value is not None:
        return len(raw.value)
    return max(path.stat().st_size - raw.value_tell, 0)


def check_instance(
    part: ReceivedPart, study_uid: str | None = None, max_inflated_bytes: int = 4 << 30
) -> CheckedInstance:
    """Read a part's header and check it is a storable instance (see the module doc); a
    deflated instance that inflates past ``max_inflated_bytes`` is refused unparsed."""
    checked = CheckedInstance(part)
    try:
        with part.path.open("rb") as stream:
            check_inflation(stream, "the instance", max_inflated_bytes)
    except PayloadTooLarge as error:
        return _failed(checked, CANNOT_UNDERSTAND, error.message)
    try:
        ds = pydicom.dcmread(part.path, defer_size=_DEFER_BYTES)  # pixels are not read
        checked.sop_class_uid = str(
            ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", "")
        )
        checked.sop_instance_uid = str(
            ds.get("SOPInstanceUID", "") or ds.file_meta.get("MediaStorageSOPInstanceUID", "")
        )
        checked.study_uid = str(ds.get("StudyInstanceUID", ""))
        checked.series_uid = str(ds.get("SeriesInstanceUID", ""))
        uids = (checked.sop_class_uid, checked.sop_instance_uid, checked.study_uid,
                checked.series_uid)  # fmt: skip
        if not all(UID_PATTERN.match(uid) and len(uid) <= 64 for uid in uids):
            return _failed(checked, CANNOT_UNDERSTAND, "missing or malformed UIDs")
        expected = _expected_pixel_bytes(ds)
        present = _pixel_bytes_present(ds, part.path)
        if expected is not None and present < expected:
            return _failed(
                checked,
                CANNOT_UNDERSTAND,
                f"pixel data holds {present} bytes, its header needs {expected}",
            )
        if study_uid is not None and checked.study_uid != study_uid:
            return _failed(checked, DATASET_DOES_NOT_MATCH, "the instance belongs to another study")
    except (InvalidDicomError, EOFError, OSError, ValueError, AttributeError, KeyError) as error:
        return _failed(checked, CANNOT_UNDERSTAND, f"not a readable DICOM instance: {error}")
    if PIXEL_DATA in ds:
        del ds[PIXEL_DATA]
    checked.dataset = ds
    return checked


def _failed(checked: CheckedInstance, reason: int, text: str) -> CheckedInstance:
    checked.failure, checked.reason = reason, text
    return checked


def _uid_or_empty(uid: str) -> str:
    return uid if UID_PATTERN.match(uid) and len(uid) <= 64 else ""


def store_response(checked: list[CheckedInstance], retrieve_base: str | None = None) -> dict:
    """The Store Instances Response dataset (``application/dicom+json``)."""
    response = Dataset()
    referenced, failed = [], []
    for item in checked:
        entry = Dataset()
        entry.ReferencedSOPClassUID = _uid_or_empty(item.sop_class_uid)
        entry.ReferencedSOPInstanceUID = _uid_or_empty(item.sop_instance_uid)
        if item.failure is None:
            if retrieve_base:
                entry.RetrieveURL = (
                    f"{retrieve_base}/studies/{item.study_uid}/series/{item.series_uid}"
                    f"/instances/{item.sop_instance_uid}"
                )
            referenced.append(entry)
        else:
            entry.FailureReason = item.failure
            failed.append(entry)
    if referenced:
        response.ReferencedSOPSequence = referenced
    if failed:
        response.FailedSOPSequence = failed
    return response.to_json_dict()


def response_status(checked: list[CheckedInstance]) -> int:
    """200 all stored, 202 some stored, 409 none stored (PS3.18 Table 10.5.3-1)."""
    stored = sum(item.failure is None for item in checked)
    if stored == len(checked):
        return 200
    return 202 if stored else 409
