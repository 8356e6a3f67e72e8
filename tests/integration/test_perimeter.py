"""The perimeter, tried on the real server as an attacker or a careless client would:
nothing is read before the token is checked, bodies are bounded while they stream,
unknown routes answer at once, and ``/metrics`` carries route templates only."""

from __future__ import annotations

import re
import select
import socket
import uuid
from urllib.parse import urlparse

import numpy as np
import pytest

from tests.server import MAX_UPLOAD_BYTES, TOKENS

MiB = 1 << 20


def _send_until_answered(base_url: str, head: str, total: int, *, chunked: bool = False):
    """Send ``head``, then up to ``total`` body bytes in 64 KiB steps, stopping as soon as
    an answer arrives; returns (body bytes sent by then, status, response text).

    The kernel would take megabytes into socket buffers without the server reading them,
    so the send buffer is kept small and the answer is waited for between steps (first
    for 5 s after the headers: a server that needs no body answers then)."""
    url = urlparse(base_url)
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    sock.sendall(head.encode())
    piece = b"x" * (64 << 10)
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece
    sent, wait, offset = 0, 5.0, 0
    try:
        while sent < total:
            readable, writable, _ = select.select([sock], [sock], [], wait)
            wait = 0.05
            if readable:
                break
            if writable:
                try:
                    n = sock.send(frame[offset:])  # may be partial: keep the framing whole
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent, offset = sent + n, (offset + n) % len(frame)
        sock.settimeout(30)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 10:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    finally:
        sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer else None
    return sent, status, answer.decode("latin-1")


def _head(path: str, token: str | None, content_type: str, length: int | None) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Type: {content_type}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    return "\r\n".join(lines) + "\r\n\r\n"


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    "path, content_type",
    [
        ("/v1/segment", "multipart/form-data; boundary=zzz"),
        ("/v1/models/lv-ct/promote", "application/json"),
        ("/dicomweb/studies", 'multipart/related; type="application/dicom"; boundary=zzz'),
    ],
)
def test_an_unauthenticated_256_mib_upload_is_refused_before_1_mib_is_sent(
    server, path, content_type, declared
):
    total = 256 * MiB
    head = _head(path, None, content_type, total if declared else None)
    sent, status, answer = _send_until_answered(server.base_url, head, total, chunked=not declared)
    assert status == 401, answer
    assert '"code": "missing_token"' in answer or '"code":"missing_token"' in answer
    assert sent < MiB, f"{sent} body bytes were taken before the 401"


def test_a_wrong_role_is_refused_before_the_body_too(server):
    head = _head("/v1/jobs", TOKENS["clinical"], "multipart/form-data; boundary=zzz", 256 * MiB)
    sent, status, answer = _send_until_answered(server.base_url, head, 256 * MiB)
    assert status == 403 and "wrong_role" in answer and sent < MiB


def test_bodies_over_the_route_limit_are_refused_declared_or_counted(server):
    # declared: answered from the headers
    head = _head("/v1/segment", TOKENS["clinical"], "multipart/form-data; boundary=zzz",
                 MAX_UPLOAD_BYTES + 1)  # fmt: skip
    sent, status, answer = _send_until_answered(server.base_url, head, MAX_UPLOAD_BYTES + 1)
    assert status == 413 and "payload_too_large" in answer and sent < MiB
    # counted: a chunked JSON body past the 1 MiB JSON limit
    head = _head("/v1/models/lv-ct/promote", TOKENS["ops"], "application/json", None)
    sent, status, answer = _send_until_answered(server.base_url, head, 8 * MiB, chunked=True)
    assert status == 413 and "payload_too_large" in answer, answer
    assert sent < 4 * MiB


def test_unknown_routes_answer_without_reading_the_body(server):
    head = _head("/v1/no-such-route", TOKENS["ops"], "application/json", 256 * MiB)
    sent, status, answer = _send_until_answered(server.base_url, head, 256 * MiB)
    assert status == 404 and "route_not_found" in answer and sent < MiB
    with server.client("ops") as client:
        wrong = client.delete("/v1/segment")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_metrics_carry_route_templates_never_ids_and_stay_bounded(server):
    probes = [uuid.uuid4().hex for _ in range(1000)]
    with server.client("clinical") as client:
        for probe in probes[:200]:
            assert client.get(f"/v1/results/{probe}").status_code == 404
        for probe in probes[200:]:
            client.get(f"/{probe}/{probe[:8]}")
        text = client.get("/metrics").text
    assert not any(probe in text for probe in probes)
    routes = set(re.findall(r'sitetune_http_requests_total\{[^}]*route="([^"]*)"', text))
    assert "/v1/results/{result_id}" in routes and "unmatched" in routes
    assert len(routes) < 60, routes
    assert "bentoml_service_request_total" not in text  # labelled by raw path: switched off


def test_named_principals_are_created_used_and_revoked_without_restart(server):
    with server.client("ops") as ops:
        created = ops.post("/v1/tokens", json={"name": "Dr Alice Example", "roles": ["clinical"]})
        assert created.status_code == 201, created.text
        alice = created.json()
        listed = ops.get("/v1/tokens").json()["tokens"]
        assert alice["token"] not in str(listed)
        assert any(p["name"] == "Dr Alice Example" for p in listed)
        bad = ops.post("/v1/tokens", json={"name": "x", "roles": ["admin"]})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_roles"
    with server.client() as anonymous:
        headers = {"Authorization": f"Bearer {alice['token']}"}
        me = anonymous.get("/v1/whoami", headers=headers)
        assert me.status_code == 200 and me.json()["name"] == "Dr Alice Example"
        assert anonymous.get("/v1/models", headers=headers).status_code == 403
        with server.client("ops") as ops:
            assert ops.delete(f"/v1/tokens/{alice['id']}").status_code == 200
        for _ in range(4):  # every worker refuses it at once
            refused = anonymous.get("/v1/whoami", headers=headers)
            assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]


def test_audit_rows_carry_the_principals_name(server):
    with server.client("ops") as ops:
        robot = ops.post("/v1/tokens", json={"name": "release robot", "roles": ["ops"]}).json()
        model = ops.get("/v1/models/lv-ct").json()
        production = model["aliases"]["production"]
    with server.client() as client:
        headers = {"Authorization": f"Bearer {robot['token']}"}
        moved = client.post(
            "/v1/models/lv-ct/promote",
            json={"version": production, "reason": "audit test"},
            headers=headers,
        )
        assert moved.status_code == 200, moved.text
        audit = client.get("/v1/audit", headers=headers).json()["entries"]
    assert any(e["actor"] == "release robot" and e["reason"] == "audit test" for e in audit)


def test_the_cli_creates_lists_and_revokes_named_principals(server, capsys):
    from sitetune.clients.cli import main

    common = ["--url", server.base_url, "--token", TOKENS["ops"]]
    assert main([*common, "tokens", "create", "PACS gateway", "--roles", "pacs"]) == 0
    out = capsys.readouterr().out
    token = re.search(r"token \(shown once; store it now\): (\S+)", out).group(1)
    principal_id = re.search(r"id ([0-9a-f]{32})", out).group(1)
    assert main([*common, "tokens", "list"]) == 0
    listed = capsys.readouterr().out
    assert "PACS gateway" in listed and token not in listed
    assert main(["--url", server.base_url, "--token", token, "models", "list"]) == 2  # 403
    capsys.readouterr()
    assert main([*common, "tokens", "revoke", principal_id[:10]]) == 0
    assert "revoked PACS gateway" in capsys.readouterr().out
    with server.client() as client:
        who = client.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    assert who.status_code == 401


def test_torchscript_upload_is_refused_by_default(server, tmp_path):
    import io
    import json

    import torch

    from sitetune.models.card import ModelCard
    from sitetune.models.networks import build_network

    with server.client("ops") as ops:
        model = ops.get("/v1/models/lv-ct").json()
        card = next(v for v in model["versions"] if v["version"] == model["aliases"]["production"])
        card = dict(card["card"], version=None)
        network = build_network(ModelCard.model_validate(card))
        script = tmp_path / "model.ts"
        torch.jit.save(torch.jit.trace(network.eval(), torch.zeros(1, 1, *card["patch_size"])),
                       str(script))  # fmt: skip
        answer = ops.post(
            "/v1/models",
            files={"weights": ("model.ts", io.BytesIO(script.read_bytes()))},
            data={"card": json.dumps(card)},
        )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "torchscript_disabled"


# -- bombs and load: no input makes a worker exceed its budget -------------------------------
def _worker_rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


@pytest.mark.parametrize("bomb", ["nifti", "deflated_dicom", "j2k_codestream"])
def test_bombs_are_refused_fast_and_the_worker_stays_small(server, tmp_path, bomb):
    import time

    from tests.server import MAX_INFLATED_BYTES
    from tests.unit.imaging.test_bombs import deflated_bomb, j2k_bomb, nifti_bomb

    path = {
        "nifti": lambda: nifti_bomb(tmp_path / "bomb.nii.gz"),
        "deflated_dicom": lambda: deflated_bomb(tmp_path / "bomb.dcm", 2 * MAX_INFLATED_BYTES),
        "j2k_codestream": lambda: j2k_bomb(tmp_path / "j2k.dcm"),
    }[bomb]()
    with server.client("clinical") as client:
        before = {}
        for _ in range(6):  # both workers' resident size before
            answer = client.get("/v1/whoami")
            pid = int(answer.headers["X-Sitetune-Worker"])
            before[pid] = _worker_rss(pid)
        started = time.perf_counter()
        response = client.post("/v1/segment", files={"file": (path.name, path.read_bytes())},
                               data={"model": "lv-ct"})  # fmt: skip
        elapsed = time.perf_counter() - started
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large" and elapsed < 5
    pid = int(response.headers["X-Sitetune-Worker"])
    assert _worker_rss(pid) < before.get(pid, _worker_rss(pid)) + (512 << 20)


def test_eight_concurrent_256_cubed_requests_complete_or_get_503(server, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from sitetune.imaging.nifti import save_nifti
    from sitetune.imaging.phantoms.cardiac import cardiac_phantom

    case = cardiac_phantom(77, "A", spacing=(1.0, 1.0, 1.0), fov_mm=(256.0, 256.0, 256.0))
    path = save_nifti(case.image.array.astype(np.int16), tmp_path / "big.nii.gz",
                      affine=case.image.affine)  # fmt: skip
    data = path.read_bytes()

    def post(_):
        with server.client("clinical") as client:
            response = client.post("/v1/segment", files={"file": ("big.nii.gz", data)},
                                   data={"model": "lv-ct"})  # fmt: skip
            return response.status_code, response.headers.get("Retry-After")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    assert all(status in (200, 503) for status, _ in answers), answers
    assert all(retry for status, retry in answers if status == 503)
    assert any(status == 200 for status, _ in answers)
    with server.client() as client:  # the workers are alive, none was OOM-killed
        assert client.get("/readyz").status_code == 200


def test_oidc_jwts_are_validated_against_the_issuers_key_set(server):
    from cryptography.hazmat.primitives.asymmetric import rsa

    def whoami(token):
        with server.client() as client:
            return client.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})

    good = whoami(server.jwt(preferred_username="Dr J. Example", roles=["clinical"]))
    assert good.status_code == 200 and good.json()["name"] == "Dr J. Example"
    assert good.json()["roles"] == ["clinical"]
    wrong_issuer = whoami(server.jwt(iss="https://elsewhere.invalid", roles=["ops"]))
    assert wrong_issuer.status_code == 401 and "issuer" in wrong_issuer.json()["error"]["message"]
    expired = whoami(server.jwt(exp=1_000_000, roles=["ops"]))
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "token_expired"
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = whoami(server.jwt(key=stranger, roles=["ops"]))
    assert forged.status_code == 401
    with server.client() as client:  # valid, but lacking the role: 403
        token = server.jwt(roles=["clinical"])
        models = client.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert models.status_code == 403
