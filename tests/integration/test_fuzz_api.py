"""schemathesis (a tool we did not write) fuzzes every operation of our OpenAPI schema on
the real server with an ops token: no generated request may get a 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import TOKENS


def test_schemathesis_finds_no_server_error(server, tmp_path):
    st = Path(sys.executable).parent / "st"
    if not st.exists():
        pytest.skip("schemathesis not installed (the dev extra)")
    run = subprocess.run(
        [str(st), "run", f"{server.base_url}/openapi.json",
         "-H", f"Authorization: Bearer {TOKENS['ops']}",
         "--checks", "not_a_server_error", "--phases", "examples,coverage,fuzzing",
         "--max-examples", "25", "--workers", "1", "--request-timeout", "120",
         "--seed", "1", "--report-dir", str(tmp_path), "--no-color"],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    summary = run.stdout[-4000:]
    assert run.returncode == 0, summary
    assert "passed" in summary and "Server error" not in summary
