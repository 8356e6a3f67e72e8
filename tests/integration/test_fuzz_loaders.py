"""A bounded coverage-guided fuzz (atheris) of the DICOM and NIfTI loaders: only typed
errors. `bench/fuzz_loaders.py` runs longer (bench/results/fuzz.json: 100,000 inputs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fuzz_loaders.py"


def test_the_loaders_raise_only_typed_errors_on_mutated_inputs(tmp_path):
    pytest.importorskip("atheris", reason="PyPI atheris (the dev extra)")
    out = tmp_path / "fuzz.json"
    run = subprocess.run([sys.executable, str(BENCH), "--runs", "3000", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    result = json.loads(out.read_text())
    assert run.returncode == 0 and result["untyped_errors"] == 0, run.stderr[-3000:]
    assert result["inputs"] >= 2500 and result["typed_errors"] > 0
