"""The HTTP error mapper: every exception a route raises becomes ``{"error": {"code",
"message"}}``; a bug becomes a generic 500 that names a request id and nothing else."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sitetune.errors import InvalidInput, ServiceBusy
from sitetune.service.errors import install_error_handlers

# What an unexpected exception might carry: a patient name, a UID, a path, a secret.
LEAK = "patient DOE^JANE 1.2.826.0.1.3680043.8.498.1 in /srv/sitetune/results/abc token=st_x"


@pytest.fixture
def client():
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/bug")
    def bug():
        raise RuntimeError(LEAK)

    @app.get("/key")
    def key():
        return {}[LEAK]  # a KeyError whose text is the leaked value

    @app.get("/bad")
    def bad():
        raise InvalidInput("spacing must be positive, got -1", code="bad_spacing")

    @app.get("/busy")
    def busy():
        raise ServiceBusy("the memory budget is taken", retry_after=7)

    @app.get("/typed/{n}")
    def typed(n: int):
        return {"n": n}

    # raise_server_exceptions=False: the client sees what a real client would, the 500
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ["/bug", "/key"])
def test_an_unexpected_exception_is_a_generic_500_with_a_request_id(client, caplog, path):
    with caplog.at_level(logging.ERROR, logger="sitetune.service.errors"):
        response = client.get(path)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == "internal_error"
    message = body["error"]["message"]
    request_id = re.fullmatch(
        r"internal error; quote request id ([0-9a-f]{32}) to the operators", message
    ).group(1)
    for secret in ("DOE^JANE", "1.2.826.0.1.3680043.8.498.1", "/srv/sitetune", "st_x"):
        assert secret not in response.text
    assert "Traceback" not in response.text and "Error" not in response.text
    # the operators find the traceback in the log under the id the client quotes
    (record,) = [r for r in caplog.records if request_id in r.getMessage()]
    assert record.exc_info is not None and LEAK in str(record.exc_info[1])


def test_every_500_gets_its_own_request_id(client):
    first, second = (client.get("/bug").json()["error"]["message"] for _ in range(2))
    assert first != second


def test_a_domain_error_keeps_its_status_code_and_message(client):
    response = client.get("/bad")
    assert response.status_code == 422
    assert response.json() == {
        "error": {"code": "bad_spacing", "message": "spacing must be positive, got -1"}
    }


def test_service_busy_is_a_503_that_says_when_to_retry(client):
    response = client.get("/busy")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert response.json()["error"]["code"] == "busy"


def test_framework_errors_use_the_same_body(client):
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    invalid = client.get("/typed/seven")
    assert invalid.status_code == 400
    assert invalid.json()["error"]["code"] == "bad_request"
    assert "n" in invalid.json()["error"]["message"]
