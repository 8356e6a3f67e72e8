"""The DICOMweb wire format both sides share: the STOW-RS request body and its sender,
the C-STORE status codes STOW-RS reports, the UID syntax, the retry backoff. No server
code: the clients (the DIMSE bridge) and the PACS side (`sitetune.pacs`) import it."""

from __future__ import annotations

import datetime
import re
import ssl
import uuid
from pathlib import Path

import httpx

DICOM_MEDIA_TYPE = "application/dicom"
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")

# Failure reasons (PS3.4 C-STORE statuses used by PS3.18 STOW-RS)
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900  # also: the instance belongs to another study than the URL's


def next_retry(attempts: int, base_seconds: float, max_seconds: float) -> datetime.timedelta:
    """Exponential backoff after ``attempts`` failed tries: base, 2 x base, 4 x base ...
    capped at ``max_seconds`` (the bridge's forwarding; `sitetune.work.Backoff` is the
    same rule for durable work)."""
    return datetime.timedelta(seconds=min(max_seconds, base_seconds * 2 ** max(attempts - 1, 0)))


def multipart_body(files: list[Path], boundary: str, chunk: int = 1 << 20):
    """A STOW-RS request body (``multipart/related; type="application/dicom"``) read from
    ``files`` piece by piece, for a streaming HTTP client."""
    for path in files:
        yield (
            f"--{boundary}\r\nContent-Type: {DICOM_MEDIA_TYPE}\r\n"
            f"Content-Length: {path.stat().st_size}\r\n\r\n"
        ).encode()
        with path.open("rb") as handle:
            while data := handle.read(chunk):
                yield data
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def stow(
    url: str,
    files: list[Path],
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
    verify: bool | str | ssl.SSLContext = True,
) -> httpx.Response:
    """POST ``files`` to ``<url>/studies`` as one STOW-RS request (streamed, chunked);
    ``verify``: an HTTPS peer's certificate is checked (a CA file, a TLS context that may
    also present a client certificate, or the system's trust store)."""
    boundary = f"sitetune-{uuid.uuid4().hex}"
    request_headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
        **(headers or {}),
    }
    return httpx.post(
        f"{url.rstrip('/')}/studies",
        content=multipart_body(files, boundary),
        headers=request_headers,
        timeout=timeout,
        verify=ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify,
    )
