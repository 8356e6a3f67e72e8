"""Start the real service (`sitetune-serve` -> `bentoml serve`) once per session, and a
real Orthanc that knows it as a DICOMweb peer. The fixtures are registered in
``tests/conftest.py``, so the integration and conformance suites share one server."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.orthanc import Orthanc, free_port, orthanc_missing

TOKENS = {"clinical": "clinical-test-token", "pacs": "pacs-test-token", "ops": "ops-test-token"}
MAX_UPLOAD_BYTES = 48 << 20
MAX_INFLATED_BYTES = 256 << 20  # so a deflate bomb the tests can build in seconds exceeds it
WORKERS = 2
# Ports of the Orthanc instances the PACS tests start (the service's routing file names
# them before they exist: "later" is a destination that is down until a test starts it).
ORTHANC_PORTS = {"http": free_port(), "dicom": free_port(), "later_http": free_port()}
NO_SEG_PORT = free_port()  # a DIMSE peer that refuses the SEG SOP class (test_pacs)


def pacs_config() -> str:
    """The service's routing file in the tests: first matching route wins."""
    return f"""
[destinations.orthanc-web]
type = "dicomweb"
url = "http://127.0.0.1:{ORTHANC_PORTS["http"]}/dicom-web"

[destinations.orthanc-dimse]
type = "dimse"
host = "127.0.0.1"
port = {ORTHANC_PORTS["dicom"]}
ae_title = "ORTHANC"
timeout_seconds = 20

[destinations.later]
type = "dicomweb"
url = "http://127.0.0.1:{ORTHANC_PORTS["later_http"]}/dicom-web"
timeout_seconds = 10

[destinations.no-seg]
type = "dimse"
host = "127.0.0.1"
port = {NO_SEG_PORT}
ae_title = "NOSEG"
timeout_seconds = 10

[[routes]]
name = "no-seg-ct"
model = "lv-ct"
modality = "CT"
series_description = "refused seg"
group = "study"
destinations = ["no-seg", "orthanc-web"]

[[routes]]
name = "retry-ct"
model = "lv-ct"
modality = "CT"
series_description = "retry"
group = "study"
destinations = ["later"]

[[routes]]
name = "dimse-ct"
model = "lv-ct"
modality = "CT"
series_description = "via dimse"
group = "study"
destinations = ["orthanc-dimse"]

[[routes]]
name = "dimse-flair"
model = "flair-lesion"
modality = "MR"
series_description = "via dimse"
destinations = ["orthanc-dimse"]

[[routes]]
name = "cardiac-ct"
model = "lv-ct"
modality = "CT"
series_description = "heart"
group = "study"
destinations = ["orthanc-web"]

[[routes]]
name = "brain-flair"
model = "flair-lesion"
modality = "MR"
series_description = "flair"
destinations = ["orthanc-web"]
"""


OIDC_ISSUER = "https://idp.test.invalid/realms/hospital"
OIDC_AUDIENCE = "sitetune"
# The console's OIDC sign-in goes to a fake identity provider the browser tests start here.
IDP_PORT = free_port()
CONSOLE_CLIENT_ID = "sitetune-console"


def oidc_key_set(folder: Path):
    """A locally generated RSA key and the JWKS file an identity provider would publish."""
    import json

    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    path = folder / "jwks.json"
    path.write_text(
        json.dumps({"keys": [public | {"kid": "test-key", "use": "sig", "alg": "RS256"}]})
    )
    return key, path


class Server:
    def __init__(self, base_url: str, data_dir: Path, log: Path, oidc_key=None) -> None:
        self.base_url, self.data_dir, self.log = base_url, data_dir, log
        self.oidc_key = oidc_key  # signs test JWTs the server accepts (OIDC_ISSUER)

    def jwt(self, key=None, **claims) -> str:
        """A JWT signed with the test identity provider's key (or ``key``)."""
        import time

        import jwt

        body = {"iss": OIDC_ISSUER, "aud": OIDC_AUDIENCE, "sub": "u-123",
                "exp": int(time.time()) + 300, **claims}  # fmt: skip
        return jwt.encode(body, key or self.oidc_key, algorithm="RS256",
                          headers={"kid": "test-key"})  # fmt: skip

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
    port = free_port()
    log = root / "server.log"
    (root / "data").mkdir()
    (root / "data" / "pacs.toml").write_text(pacs_config())
    oidc_key, jwks = oidc_key_set(root)
    env = dict(
        os.environ,
        SITETUNE_OIDC_ISSUER=OIDC_ISSUER,
        SITETUNE_OIDC_AUDIENCE=OIDC_AUDIENCE,
        SITETUNE_OIDC_JWKS_URL=jwks.as_uri(),
        SITETUNE_OIDC_CONSOLE_CLIENT_ID=CONSOLE_CLIENT_ID,
        SITETUNE_OIDC_AUTHORIZATION_URL=f"http://127.0.0.1:{IDP_PORT}/authorize",
        SITETUNE_OIDC_TOKEN_URL=f"http://127.0.0.1:{IDP_PORT}/token",
        SITETUNE_DATA_DIR=str(root / "data"),
        SITETUNE_PORT=str(port),
        SITETUNE_WORKERS=str(WORKERS),
        SITETUNE_MAX_UPLOAD_BYTES=str(MAX_UPLOAD_BYTES),
        SITETUNE_TOKENS=",".join(f"{r}={t}" for r, t in TOKENS.items()),
        SITETUNE_PACS_SETTLE_SECONDS="1",
        SITETUNE_PACS_RETRY_SECONDS="1",
        SITETUNE_PACS_RETRY_MAX_SECONDS="2",
        SITETUNE_MAX_INFLATED_BYTES=str(MAX_INFLATED_BYTES),
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
        yield Server(base, root / "data", log, oidc_key)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def orthanc(server, tmp_path_factory):
    """A real Orthanc whose DICOMweb client knows the service as server "sitetune"."""
    if (why := orthanc_missing()) is not None:
        pytest.skip(why)
    peer = {
        "Url": f"{server.base_url}/dicomweb/",
        "HttpHeaders": {"Authorization": f"Bearer {TOKENS['pacs']}"},
    }
    instance = Orthanc(
        tmp_path_factory.mktemp("orthanc"),
        http_port=ORTHANC_PORTS["http"],
        dicom_port=ORTHANC_PORTS["dicom"],
        servers={"sitetune": peer},
    ).start()
    yield instance
    instance.stop()
