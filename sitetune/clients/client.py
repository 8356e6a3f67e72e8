"""A synchronous Python client of the sitetune HTTP API (``../shared/API.md``).

Every method returns the parsed JSON answer, except the inference methods
(`segment_file`, `thickness_file`, `lesion_volume_file`, `analyse`), which return the
typed results of `sitetune.clients.results`. A non-2xx answer raises
`SitetuneClientError` built from the body ``{"error": {"code", "message", "details"?}}``;
a server that cannot be reached raises `SitetuneConnectionError`.

>>> with SitetuneClient("http://127.0.0.1:3000", token) as client:  # doctest: +SKIP
...     job = client.submit_job("site.zip", base="lv-ct:production", epochs=20)
...     for job in client.watch_job(job["job_id"]):
...         print(job["state"], job["progress"])
...     result = client.thickness_file("cine.zip")
...     print(result.ed.thickness_mm.median, result.outputs["sr"].available)
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from sitetune.clients.results import (
    Inference,
    InferenceResult,
    LesionVolumeResult,
    SegmentResult,
    ThicknessResult,
)

#: ``progress(sent, total)``: bytes of an upload read so far, and its size in bytes.
UploadProgress = Callable[[int, int], None]

#: Job states after which a job never changes again.
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


class SitetuneClientError(Exception):
    """An error answer of the service (``status`` is its HTTP status)."""

    def __init__(self, status: int | None, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details

    @property
    def problems(self) -> list[dict]:
        """The per-case problems of a rejected dataset (``details["problems"]``), if any."""
        problems = self.details.get("problems") if isinstance(self.details, dict) else None
        return [p for p in problems or [] if isinstance(p, dict)]

    def __str__(self) -> str:
        lines = [self.message]
        for problem in self.problems:
            case = f"{problem['case']}: " if problem.get("case") else ""
            code = f" [{problem['code']}]" if problem.get("code") else ""
            lines.append(f"  {case}{problem.get('message', '')}{code}")
        return "\n".join(lines)


class SitetuneConnectionError(SitetuneClientError):
    """The service could not be reached (refused, DNS, timeout); ``status`` is None."""

    def __init__(self, message: str) -> None:
        super().__init__(None, "connection_error", message)


@dataclass(frozen=True)
class LogChunk:
    """Log text from a byte offset, and the offset to ask for next."""

    text: str
    offset: int


class SitetuneClient:
    """Client of one sitetune service; ``token`` is sent as ``Authorization: Bearer``."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        timeout: float = 300,
        ca_file: str | None = None,
        client_cert: tuple[str, str] | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.auth_headers = headers
        # an HTTPS service's CA (else the system's trust store), and the client certificate
        # a service with mutual TLS asks for
        self.tls = ssl.create_default_context(cafile=ca_file)
        if client_cert:
            self.tls.load_cert_chain(*client_cert)
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, verify=self.tls
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SitetuneClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- inference ---------------------------------------------------------------------

    def segment(self, path: str | Path, model: str | None = None, version: int | None = None):
        """``POST /v1/segment`` with a NIfTI file or a DICOM zip: the JSON answer (a dict;
        `segment_file` parses it)."""
        fields = _form(model=model, version=version)
        return self._upload("/v1/segment", "file", path, "application/octet-stream", fields)

    def segment_file(
        self,
        path: str | Path,
        *,
        model: str | None = None,
        version: int | str | None = None,
        series: str | None = None,
        progress: UploadProgress | None = None,
    ) -> SegmentResult:
        """``POST /v1/segment``: label volumes, outputs (mask; SEG and SR for DICOM)."""
        answer = self._post_image(Inference.SEGMENT, path, model, version, series, progress)
        return SegmentResult.from_answer(answer)

    def thickness_file(
        self,
        path: str | Path,
        *,
        model: str | None = None,
        version: int | str | None = None,
        series: str | None = None,
        progress: UploadProgress | None = None,
    ) -> ThicknessResult:
        """``POST /v1/thickness`` with an image: thickness per phase, ED/ES, AHA segments."""
        answer = self._post_image(Inference.THICKNESS, path, model, version, series, progress)
        return ThicknessResult.from_answer(answer)

    def lesion_volume_file(
        self,
        path: str | Path,
        *,
        model: str | None = None,
        version: int | str | None = None,
        series: str | None = None,
        progress: UploadProgress | None = None,
    ) -> LesionVolumeResult:
        """``POST /v1/lesion-volume`` with a FLAIR image: lesion count, volumes, centroids."""
        answer = self._post_image(Inference.LESIONS, path, model, version, series, progress)
        return LesionVolumeResult.from_answer(answer)

    def analyse(
        self,
        kind: Inference | str,
        path: str | Path,
        *,
        model: str | None = None,
        version: int | str | None = None,
        series: str | None = None,
        progress: UploadProgress | None = None,
    ) -> InferenceResult:
        """Upload ``path`` (``.nii``, ``.nii.gz`` or a ``.zip`` of DICOM files) to the route
        of ``kind`` and parse the answer into its result type (`Inference.result_type`).

        ``model`` names the model (default: the route's, or for ``segment`` one chosen from
        the DICOM modality; NIfTI records none), ``version`` pins one of its versions
        (default the ``production`` alias), ``series`` (SeriesInstanceUID or SeriesNumber)
        picks one series of a zip holding several; ``progress(sent, total)`` is called as
        the upload is read.
        """
        kind = Inference(kind)
        answer = self._post_image(kind, path, model, version, series, progress)
        return kind.result_type.from_answer(answer)

    def _post_image(
        self,
        kind: Inference,
        path: str | Path,
        model: str | None,
        version: int | str | None,
        series: str | None,
        progress: UploadProgress | None,
    ) -> dict:
        path = Path(path)
        media = "application/zip" if path.suffix.lower() == ".zip" else "application/octet-stream"
        fields = _form(model=model, version=version, series=series)
        return self._upload(kind.route, "file", path, media, fields, progress)

    def result(self, result_id: str) -> dict:
        """``GET /v1/results/{result_id}``: the stored summary of a result."""
        return self._json("GET", f"/v1/results/{_seg(result_id)}")

    def download(
        self, url: str, destination: str | Path, params: dict[str, str] | None = None
    ) -> Path:
        """Stream ``GET url`` (a path on this service, e.g. an output's ``url``) into the
        file ``destination``; a non-2xx answer raises `SitetuneClientError`."""
        if "://" in url and not url.startswith(self.base_url + "/"):
            raise ValueError(f"{url} is not on the service {self.base_url}; not fetched")
        destination = Path(destination)
        try:
            with self._http.stream("GET", url, params=params) as response:
                if not response.is_success:
                    response.read()
                    raise _error_from(response)
                with destination.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
        except httpx.TransportError as exc:
            raise SitetuneConnectionError(
                f"cannot reach {self.base_url}: {exc or type(exc).__name__}"
            ) from exc
        return destination

    # -- models ------------------------------------------------------------------------

    def models(self) -> dict:
        """``GET /v1/models``: ``{"models": [{name, aliases, versions}]}``."""
        return self._json("GET", "/v1/models")

    def model(self, name: str) -> dict:
        """``GET /v1/models/{name}``: aliases and every version with its card."""
        return self._json("GET", f"/v1/models/{_seg(name)}")

    def promote(self, name: str, version: int, reason: str, force: bool = False) -> dict:
        """Move ``production`` to ``version`` (``409`` when the gate refuses, unless forced)."""
        body = {"version": version, "reason": reason, "force": force}
        return self._json("POST", f"/v1/models/{_seg(name)}/promote", json=body)

    def rollback(self, name: str, reason: str) -> dict:
        """Move ``production`` back to the version before the last promotion."""
        return self._json("POST", f"/v1/models/{_seg(name)}/rollback", json={"reason": reason})

    def audit(self, model: str | None = None) -> dict:
        """``GET /v1/audit``: ``{"entries": [...]}``, optionally for one model."""
        params = {"model": model} if model else None
        return self._json("GET", "/v1/audit", params=params)

    # -- principals ----------------------------------------------------------------------
    def create_token(self, name: str, roles: list[str]) -> dict:
        """``POST /v1/tokens``: a named principal; its ``token`` is only in this answer."""
        return self._json("POST", "/v1/tokens", json={"name": name, "roles": roles})

    def tokens(self) -> dict:
        """``GET /v1/tokens``: ``{"tokens": [{id, name, roles, created_at, ...}]}``."""
        return self._json("GET", "/v1/tokens")

    def revoke_token(self, principal_id: str) -> dict:
        """``DELETE /v1/tokens/{id}``: refused from the next request on."""
        return self._json("DELETE", f"/v1/tokens/{_seg(principal_id)}")

    def whoami(self) -> dict:
        """``GET /v1/whoami``: the principal this client's token belongs to."""
        return self._json("GET", "/v1/whoami")

    # -- fine-tuning jobs --------------------------------------------------------------

    def submit_job(
        self,
        dataset: str | Path,
        base: str,
        *,
        strategy: str | None = None,
        epochs: int | None = None,
        learning_rate: float | None = None,
        val_fraction: float | None = None,
        val_cases: str | Sequence[str] | None = None,
        seed: int | None = None,
        auto_promote: bool | None = None,
        promote_margin: float | None = None,
        iterations_per_epoch: int | None = None,
    ) -> dict:
        """``POST /v1/jobs`` with a site dataset zip; only the fields given are sent.

        ``base`` is ``name``, ``name:alias`` or ``name:version``; ``val_cases`` is a list of
        case names or a comma-separated string. Answers the queued job (``202``).
        """
        if val_fraction is not None and val_cases is not None:
            raise ValueError("give val_fraction or val_cases, not both")
        if val_cases is not None and not isinstance(val_cases, str):
            val_cases = ",".join(val_cases)
        fields = _form(
            base=base,
            strategy=strategy,
            epochs=epochs,
            learning_rate=learning_rate,
            val_fraction=val_fraction,
            val_cases=val_cases,
            seed=seed,
            auto_promote=auto_promote,
            promote_margin=promote_margin,
            iterations_per_epoch=iterations_per_epoch,
        )
        return self._upload("/v1/jobs", "dataset", dataset, "application/zip", fields)

    def jobs(self) -> dict:
        """``GET /v1/jobs``: ``{"jobs": [job, ...]}``."""
        return self._json("GET", "/v1/jobs")

    def job(self, job_id: str) -> dict:
        """``GET /v1/jobs/{job_id}``: state, progress, result."""
        return self._json("GET", f"/v1/jobs/{_seg(job_id)}")

    def cancel_job(self, job_id: str) -> dict:
        """``POST /v1/jobs/{job_id}/cancel``: the job (``cancelled`` once stopped)."""
        return self._json("POST", f"/v1/jobs/{_seg(job_id)}/cancel")

    def job_logs(self, job_id: str, offset: int = 0) -> LogChunk:
        """The job's log from byte ``offset``; ``.offset`` is where the next call starts."""
        response = self._send("GET", f"/v1/jobs/{_seg(job_id)}/logs", params={"offset": offset})
        header = response.headers.get("X-Log-Offset")
        next_offset = int(header) if header else offset + len(response.content)
        return LogChunk(response.content.decode("utf-8", errors="replace"), next_offset)

    def watch_job(self, job_id: str, interval: float = 1.0) -> Iterator[dict]:
        """Yield the job every ``interval`` seconds until it is in a final state (last)."""
        while True:
            job = self.job(job_id)
            yield job
            if job.get("state") in FINAL_STATES:
                return
            time.sleep(interval)

    def follow_logs(self, job_id: str, offset: int = 0, interval: float = 1.0) -> Iterator[str]:
        """Yield new log text until the job is final and its log is read to the end."""
        while True:
            final = self.job(job_id).get("state") in FINAL_STATES  # before reading: no gap
            chunk = self.job_logs(job_id, offset)
            offset = chunk.offset
            if chunk.text:
                yield chunk.text
            if final:
                return
            time.sleep(interval)

    # -- transport ---------------------------------------------------------------------

    def _upload(
        self,
        route: str,
        field: str,
        path: str | Path,
        content_type: str,
        fields: dict,
        progress: UploadProgress | None = None,
    ) -> dict:
        """``POST`` one file as multipart ``field``, with form ``fields``; the body is
        streamed from the file (``progress`` sees each chunk read)."""
        path = Path(path)
        with path.open("rb") as stream:
            body = _ProgressReader(stream, progress) if progress else stream
            files = {field: (path.name, body, content_type)}
            return self._json("POST", route, data=fields, files=files)

    def _json(self, method: str, path: str, **kwargs: Any) -> dict:
        response = self._send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise SitetuneClientError(
                response.status_code,
                "invalid_response",
                f"{method} {path} answered {response.status_code} without JSON: "
                f"{response.text[:200]!r}",
            ) from exc

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise SitetuneConnectionError(
                f"cannot reach {self.base_url}: {exc or type(exc).__name__}"
            ) from exc
        if response.is_success:
            return response
        raise _error_from(response)


class _ProgressReader:
    """A binary file that reports ``progress(read, size)`` as httpx reads it to send it.

    httpx streams a multipart file in chunks (``seek(0)`` then ``read(n)``) and sizes the
    body from ``fileno()``, so the request keeps its Content-Length."""

    def __init__(self, stream: Any, progress: UploadProgress) -> None:
        self._stream, self._progress = stream, progress
        self._size = Path(stream.name).stat().st_size
        self._read = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self._read = min(self._size, self._read + len(chunk))
        self._progress(self._read, self._size)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self._stream.seek(offset, whence)
        self._read = position
        return position

    def tell(self) -> int:
        return self._stream.tell()

    def fileno(self) -> int:
        return self._stream.fileno()


def _error_from(response: httpx.Response) -> SitetuneClientError:
    """The `SitetuneClientError` of a non-2xx answer, JSON error body or not."""
    try:
        error = response.json()["error"]
        return SitetuneClientError(
            response.status_code,
            str(error.get("code", "http_error")),
            str(error.get("message", "")) or response.reason_phrase,
            error.get("details"),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        text = response.text.strip()[:200] or response.reason_phrase
        return SitetuneClientError(
            response.status_code, "http_error", f"HTTP {response.status_code}: {text}"
        )


def _seg(value: str) -> str:
    """``value`` quoted as one URL path segment."""
    return quote(str(value), safe="")


def _form(**fields: Any) -> dict[str, str]:
    """Multipart form fields: the given ones only, booleans as ``"true"``/``"false"``."""
    out = {}
    for key, value in fields.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out
