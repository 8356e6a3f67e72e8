"""A real Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) on loopback, started with
the project's own configuration for the PACS tests."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_missing() -> str | None:
    """Why Orthanc cannot run here (None when it can)."""
    if shutil.which("Orthanc") is None and not Path("/usr/sbin/Orthanc").exists():
        return "Orthanc is not installed (Debian package 'orthanc')"
    if not DICOMWEB_PLUGIN.exists():
        return "the Orthanc DICOMweb plugin is not installed (Debian package 'orthanc-dicomweb')"
    return None


class Orthanc:
    """One Orthanc process; ``servers`` are its DICOMweb peers (name -> {Url, HttpHeaders})."""

    def __init__(
        self,
        root: Path,
        *,
        http_port: int | None = None,
        dicom_port: int | None = None,
        aet: str = "ORTHANC",
        servers: dict | None = None,
    ) -> None:
        self.root = root
        self.http_port = http_port or free_port()
        self.dicom_port = dicom_port or free_port()
        self.aet = aet
        self.servers = servers or {}
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.http_port}"

    def config(self) -> dict:
        return {
            "Name": f"sitetune-test-{self.aet}",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False,
            "StableAge": 1,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": self.servers},
        }

    def start(self) -> Orthanc:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "orthanc.json"
        config.write_text(json.dumps(self.config(), indent=2))
        exe = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        log = (self.root / "orthanc.log").open("a")
        self.proc = subprocess.Popen([exe, str(config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/system", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Orthanc did not start: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def log_tail(self, n: int = 3000) -> str:
        path = self.root / "orthanc.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=300)

    def upload(self, files: list[Path]) -> str:
        """Store files through the REST API; returns the Orthanc id of their study."""
        study = None
        with self.client() as c:
            for path in files:
                r = c.post("/instances", content=path.read_bytes())
                r.raise_for_status()
                study = r.json()["ParentStudy"]
        return study

    def series_of_study(self, study_uid: str) -> list[dict]:
        """Each series of a study (by StudyInstanceUID) with its main tags."""
        with self.client() as c:
            found = c.post(
                "/tools/find",
                json={"Level": "Series", "Query": {"StudyInstanceUID": study_uid}, "Expand": True},
            )
            found.raise_for_status()
            return found.json()

    def instance_files(self, series: dict) -> list[bytes]:
        with self.client() as c:
            return [c.get(f"/instances/{i}/file").content for i in series["Instances"]]
