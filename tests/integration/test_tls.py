"""TLS for the HTTP service, with a locally generated CA (openssl): HTTPS with the CA
works, plain HTTP does not, and with a client CA configured a client needs its
certificate (mutual TLS). The same server runs with SITETUNE_ALLOW_TORCHSCRIPT on: there a
TorchScript upload registers (it is refused by default: test_perimeter)."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.integration.orthanc import free_port

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def tls(ca: Path | None = None, client: tuple[str, str] | None = None) -> ssl.SSLContext:
    """A client TLS context trusting ``ca`` (else the system's), presenting ``client``."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if client:
        context.load_cert_chain(*client)
    return context


def make_ca(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost / 127.0.0.1 and a client certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=sitetune test CA", cwd=folder)  # fmt: skip
    (folder / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)  # fmt: skip
        extra = ["-extfile", "san.cnf"] if name == "server" else []
        sign = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"]
        _openssl("x509", "-req", "-in", f"{name}.csr", *sign, "-out", f"{name}.pem", *extra,
                 cwd=folder)  # fmt: skip
    return {p.stem + p.suffix: p for p in folder.iterdir()}


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    certs = make_ca(root / "certs")
    port = free_port()
    env = dict(
        os.environ,
        SITETUNE_DATA_DIR=str(root / "data"),
        SITETUNE_PORT=str(port),
        SITETUNE_TOKENS="ops=tls-ops-token",
        SITETUNE_EMBEDDED_WORKER="false",
        SITETUNE_EMBEDDED_PACS_WORKER="false",
        SITETUNE_TLS_CERTFILE=str(certs["server.pem"]),
        SITETUNE_TLS_KEYFILE=str(certs["server.key"]),
        SITETUNE_TLS_CLIENT_CA=str(certs["ca.pem"]),
        SITETUNE_ALLOW_TORCHSCRIPT="true",  # this server also shows the setting at work
    )
    log = (root / "server.log").open("w")
    serve = str(Path(sys.executable).parent / "sitetune-serve")
    proc = subprocess.Popen([serve], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    base = f"https://127.0.0.1:{port}"
    client_cert = (str(certs["client.pem"]), str(certs["client.key"]))
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                context = tls(certs["ca.pem"], client_cert)
                ready = httpx.get(f"{base}/readyz", verify=context, timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                pytest.fail((root / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield base, certs, client_cert
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_https_with_the_ca_and_a_client_certificate_works(tls_server):
    base, certs, client_cert = tls_server
    with httpx.Client(verify=tls(certs["ca.pem"], client_cert)) as client:
        me = client.get(f"{base}/v1/whoami", headers={"Authorization": "Bearer tls-ops-token"})
    assert me.status_code == 200 and me.json()["name"] == "ops"


def test_plain_http_unknown_cas_and_missing_client_certificates_are_refused(tls_server):
    base, certs, client_cert = tls_server
    with pytest.raises(httpx.HTTPError):
        httpx.get(base.replace("https", "http") + "/readyz", timeout=5)
    with pytest.raises(httpx.HTTPError):  # the server's certificate is not trusted
        httpx.get(f"{base}/readyz", verify=tls(None, client_cert), timeout=5)
    with pytest.raises(httpx.HTTPError):  # mutual TLS: no client certificate
        httpx.get(f"{base}/readyz", verify=tls(certs["ca.pem"]), timeout=5)


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed")
def test_the_dimse_bridge_speaks_dicom_tls_and_forwards_over_https(tls_server, tmp_path):
    """dcmtk's storescu sends over DICOM TLS with a client certificate; the bridge
    forwards over HTTPS (verifying the service with the CA) and the series arrives."""
    from sitetune.imaging.dicom_write import write_dicom_series
    from sitetune.imaging.phantoms.cardiac import cardiac_phantom

    base, certs, client_cert = tls_server
    port = free_port()
    env = dict(os.environ, SITETUNE_URL=base, SITETUNE_TOKEN="tls-ops-token",
               SITETUNE_CA_FILE=str(certs["ca.pem"]), SITETUNE_CLIENT_CERT=client_cert[0],
               SITETUNE_CLIENT_KEY=client_cert[1])  # fmt: skip
    cli = Path(sys.executable).parent / "sitetune"
    log = (tmp_path / "bridge.log").open("w")
    bridge = subprocess.Popen(
        [str(cli), "bridge", "--port", str(port), "--ae-title", "SITETUNE", "--allow", "STORESCU",
         "--allow", "ECHOSCU", "--spool", str(tmp_path / "spool"), "--idle-seconds", "2",
         "--tls-cert", str(certs["server.pem"]), "--tls-key", str(certs["server.key"]),
         "--tls-client-ca", str(certs["ca.pem"])],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    tls_args = ["+tls", str(certs["client.key"]), str(certs["client.pem"]), "+cf",
                str(certs["ca.pem"])]  # fmt: skip
    try:
        for _ in range(60):
            echo = subprocess.run(["echoscu", *tls_args, "-aec", "SITETUNE", "127.0.0.1",
                                   str(port)], capture_output=True)  # fmt: skip
            if echo.returncode == 0:
                break
            time.sleep(0.5)
        assert echo.returncode == 0, echo.stderr
        plain = subprocess.run(["echoscu", "-aec", "SITETUNE", "127.0.0.1", str(port)],
                               capture_output=True, timeout=30)  # fmt: skip
        assert plain.returncode != 0, "a plain TCP association is refused"
        case = cardiac_phantom(5, "A", phases=1, spacing=(3.0, 3.0, 4.0))
        files = write_dicom_series(case.image, tmp_path / "dcm", series_description="tls heart")
        store = ["storescu", *tls_args, "-aec", "SITETUNE", "127.0.0.1", str(port)]
        sent = subprocess.run([*store, *map(str, files)], capture_output=True, timeout=120)
        assert sent.returncode == 0, sent.stderr
        series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        context = tls(certs["ca.pem"], client_cert)
        headers = {"Authorization": "Bearer tls-ops-token"}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            listed = httpx.get(f"{base}/v1/pacs/series", headers=headers, verify=context).json()
            if any(s["series_uid"] == series_uid for s in listed["series"]):
                break
            time.sleep(1)
        else:
            bridge_log = (tmp_path / "bridge.log").read_text()[-2000:]
            pytest.fail(f"the series never reached the service\n{bridge_log}")
    finally:
        os.killpg(bridge.pid, signal.SIGTERM)
        bridge.wait(timeout=20)


def test_with_the_setting_on_a_torchscript_upload_registers(tls_server, tmp_path):
    import io
    import json

    import torch

    from sitetune.models.card import ModelCard
    from sitetune.models.networks import build_network

    base, certs, client_cert = tls_server
    headers = {"Authorization": "Bearer tls-ops-token"}
    with httpx.Client(verify=tls(certs["ca.pem"], client_cert), headers=headers,
                      timeout=300) as client:  # fmt: skip
        model = client.get(f"{base}/v1/models/lv-ct").json()
        production = model["aliases"]["production"]
        card = next(v for v in model["versions"] if v["version"] == production)["card"]
        card = dict(card, version=None)
        network = build_network(ModelCard.model_validate(card)).eval()
        script = tmp_path / "model.ts"
        torch.jit.save(
            torch.jit.trace(network, torch.zeros(1, 1, *card["patch_size"])), str(script)
        )
        answer = client.post(
            f"{base}/v1/models",
            files={"weights": ("model.ts", io.BytesIO(script.read_bytes()))},
            data={"card": json.dumps(card)},
        )
    assert answer.status_code == 201, answer.text
    assert answer.json()["version"] > production
