"""``sitetune bridge``: a DIMSE C-STORE SCP that forwards what it receives to the service
over STOW-RS, for PACS and modalities that only speak classic DICOM networking.

- Accepts associations called with its AE title (``--ae-title``) from any caller, or only
  from ``--allow`` AE titles; answers C-ECHO; accepts every storage SOP class in every
  transfer syntax pynetdicom knows.
- Each instance is written to the spool folder as it arrives
  (``<spool>/<study>/<series>/<sop>.dcm``, the bytes exactly as received).
- A study is forwarded, as one STOW-RS request, when the association that brought it
  ends, or once no instance arrived for ``--idle-seconds`` (long-lived associations).
  Forwarded files are deleted; a study the service rejects entirely (409) is moved to
  ``<spool>/rejected/``; while the service is unreachable or failing (5xx), it is tried
  again with exponential backoff. The spool survives restarts: what is found there at
  start is forwarded.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    evt,
)
from pynetdicom.sop_class import Verification

from sitetune.dicomweb import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, UID_PATTERN, next_retry, stow

logger = logging.getLogger("sitetune.bridge")

SUCCESS = 0x0000


@dataclass
class _Study:
    last_received: float
    complete: bool = False  # its association ended
    next_try: float = 0.0
    failures: int = 0


class Bridge:
    """C-STORE SCP + forwarder. `start` listens (non-blocking); `stop` shuts down."""

    def __init__(
        self,
        service_url: str,
        headers: dict[str, str],
        spool: Path,
        *,
        ae_title: str = "SITETUNE",
        host: str = "127.0.0.1",
        port: int = 11112,
        allowed_callers: list[str] | None = None,
        idle_seconds: float = 30.0,
        retry_seconds: float = 5.0,
        retry_max_seconds: float = 300.0,
        tls: tuple[str, str] | None = None,
        tls_client_ca: str | None = None,
        service_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.url = service_url.rstrip("/") + "/dicomweb"
        self.headers = headers
        self.spool = Path(spool)
        self.ae_title, self.host, self.port = ae_title, host, port
        self.allowed_callers = allowed_callers or None
        self.idle_seconds = idle_seconds
        self.retry_seconds, self.retry_max_seconds = retry_seconds, retry_max_seconds
        self.tls, self.tls_client_ca, self.service_tls = tls, tls_client_ca, service_tls
        self._studies: dict[str, _Study] = {}
        self._by_association: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = None
        self._forwarder: threading.Thread | None = None

    # -- receiving -------------------------------------------------------------------
    def _on_store(self, event) -> int:
        ds = event.dataset
        study = str(ds.get("StudyInstanceUID", ""))
        series = str(ds.get("SeriesInstanceUID", ""))
        sop = str(event.request.AffectedSOPInstanceUID)
        if not all(UID_PATTERN.match(uid) for uid in (study, series, sop)):
            return CANNOT_UNDERSTAND
        folder = self.spool / study / series
        try:
            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / f".{sop}.part"
            with partial.open("wb") as out:
                out.write(event.encoded_dataset())
            partial.replace(folder / f"{sop}.dcm")
        except OSError:
            logger.exception("cannot spool an instance")
            return OUT_OF_RESOURCES
        with self._lock:
            entry = self._studies.setdefault(study, _Study(time.monotonic()))
            entry.last_received, entry.complete = time.monotonic(), False
            self._by_association.setdefault(id(event.assoc), set()).add(study)
        return SUCCESS

    def _on_association_end(self, event) -> None:
        with self._lock:
            for study in self._by_association.pop(id(event.assoc), set()):
                if study in self._studies:
                    self._studies[study].complete = True

    # -- forwarding ------------------------------------------------------------------
    def _due(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            return [
                uid
                for uid, s in self._studies.items()
                if (s.complete or now - s.last_received >= self.idle_seconds) and now >= s.next_try
            ]

    def forward(self, study_uid: str) -> bool:
        """Send one spooled study to the service; True when it is off the spool."""
        folder = self.spool / study_uid
        with self._lock:
            entry = self._studies.get(study_uid)
            snapshot = entry.last_received if entry else None
        files = sorted(folder.glob("*/*.dcm"))
        if not files:
            with self._lock:
                self._studies.pop(study_uid, None)
            shutil.rmtree(folder, ignore_errors=True)
            return True
        try:
            response = stow(self.url, files, self.headers, verify=self.service_tls or True)
        except httpx.HTTPError as error:
            return self._later(study_uid, f"{type(error).__name__}: {error}")
        if response.status_code in (200, 202):
            failed = response.json().get("00081198", {}).get("Value", [])
            logger.info(
                "forwarded %d instances (%d refused by the service)", len(files), len(failed)
            )
            for path in files:
                path.unlink(missing_ok=True)
        elif response.status_code in (400, 409, 413, 415):
            target = self.spool / "rejected" / study_uid
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(folder), str(target))
            logger.error(
                "the service refused a study (%d): %s; kept in %s",
                response.status_code, response.text[:300], target,
            )  # fmt: skip
        else:  # 401/403 (fix the token), 5xx: keep it and try again
            return self._later(study_uid, f"HTTP {response.status_code}: {response.text[:200]}")
        with self._lock:  # instances that arrived meanwhile stay for the next round
            entry = self._studies.get(study_uid)
            if entry is not None and entry.last_received == snapshot:
                self._studies.pop(study_uid)
                shutil.rmtree(folder, ignore_errors=True)
        return True

    def _later(self, study_uid: str, reason: str) -> bool:
        with self._lock:
            entry = self._studies.setdefault(study_uid, _Study(time.monotonic(), complete=True))
            entry.failures += 1
            delay = next_retry(
                entry.failures, self.retry_seconds, self.retry_max_seconds
            ).total_seconds()
            entry.next_try = time.monotonic() + delay
        logger.warning("forwarding failed (%s); next try in %.0f s", reason, delay)
        return False

    def _forward_loop(self) -> None:
        while not self._stopping.is_set():
            for study in self._due():
                try:
                    self.forward(study)
                except Exception:  # never let one study stop the forwarder
                    logger.exception("forwarding a study failed")
                    self._later(study, "unexpected error")
            self._stopping.wait(0.5)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> Bridge:
        self.spool.mkdir(parents=True, exist_ok=True)
        for folder in sorted(p for p in self.spool.iterdir() if p.is_dir()):
            if folder.name != "rejected" and UID_PATTERN.match(folder.name):
                self._studies[folder.name] = _Study(time.monotonic(), complete=True)
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        if self.allowed_callers:
            ae.require_calling_aet = self.allowed_callers
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_association_end),
            (evt.EVT_ABORTED, self._on_association_end),
        ]
        self._server = ae.start_server(
            (self.host, self.port), block=False, evt_handlers=handlers, ssl_context=self._tls()
        )
        self._forwarder = threading.Thread(target=self._forward_loop, name="forwarder", daemon=True)
        self._forwarder.start()
        logger.info(
            "bridge %s listening on %s:%d, forwarding to %s",
            self.ae_title, self.host, self.port, self.url,
        )  # fmt: skip
        return self

    def _tls(self) -> ssl.SSLContext | None:
        """DICOM TLS (PS3.15 B.1): the bridge's certificate, and with ``tls_client_ca``
        only callers presenting a certificate it signed."""
        if self.tls is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self.tls)
        if self.tls_client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.tls_client_ca)
        return context

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
        if self._forwarder is not None:
            self._forwarder.join(timeout=10)

    def serve_forever(self) -> None:
        self.start()
        try:
            while not self._stopping.wait(1.0):
                pass
        finally:
            self.stop()
