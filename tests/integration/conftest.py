"""Start the real service (`sitetune-serve` -> `bentoml serve`) once per session."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TOKENS = {"clinical": "clinical-test-token", "pacs": "pacs-test-token", "ops": "ops-test-token"}
MAX_UPLOAD_BYTES = 48 << 20
WORKERS = 2


class Server:
    def __init__(self, base_url: str, data_dir: Path, log: Path) -> None:
        self.base_url, self.data_dir, self.log = base_url, data_dir, log

    def client(self, role: str | None = None, **kwargs) -> httpx.Client:
        """An HTTP client, authenticated as ``role`` when given."""
        headers = {"Authorization": f"Bearer {TOKENS[role]}"} if role else {}
        return httpx.Client(base_url=self.base_url, timeout=300, headers=headers, **kwargs)

    def register_production_copy(self, ops: httpx.Client, name: str, **card) -> httpx.Response:
        """``POST /v1/models`` a new version of ``name`` with production's weights and its
        card, fields in ``card`` replaced; returns the response."""
        model = ops.get(f"/v1/models/{name}").json()
        production = model["aliases"]["production"]
        current = next(v for v in model["versions"] if v["version"] == production)
        weights = self.data_dir / "artifacts" / "models" / name / str(production) / "weights.pt"
        return ops.post(
            "/v1/models",
            files={"weights": ("w.pt", io.BytesIO(weights.read_bytes()))},
            data={"card": json.dumps(dict(current["card"], version=None, **card))},
        )


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    log = root / "server.log"
    env = dict(
        os.environ,
        SITETUNE_DATA_DIR=str(root / "data"),
        SITETUNE_PORT=str(port),
        SITETUNE_WORKERS=str(WORKERS),
        SITETUNE_MAX_UPLOAD_BYTES=str(MAX_UPLOAD_BYTES),
        SITETUNE_TOKENS=",".join(f"{r}={t}" for r, t in TOKENS.items()),
    )
    serve = Path(sys.executable).parent / "sitetune-serve"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(serve)],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # first start exports the built-in models to ONNX
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Server(base, root / "data", log)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
