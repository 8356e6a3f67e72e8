"""The serve command starts a real BentoML server on the embedded defaults."""

from __future__ import annotations


def test_health_readiness_and_metrics(server):
    with server.client() as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert "sitetune_http_requests_total" in metrics.text
        info = client.get("/v1/info").json()
        assert info["service"] == "sitetune" and info["version"]


def test_local_state_lives_under_the_data_dir(server):
    assert (server.data_dir / "artifacts").is_dir()


def test_errors_are_json_with_code_and_message(server):
    with server.client() as client:
        response = client.post("/v1/info")
        assert response.status_code == 405
        assert response.json() == {
            "error": {"code": "method_not_allowed", "message": "POST is not allowed here"}
        }
        # unknown routes under the service's prefixes are JSON too
        for path in ("/v1/nothing-here", "/dicomweb/studies/1.2/series"):
            missing = client.get(path)
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "route_not_found"
        assert client.delete("/v1/info").status_code == 405
