"""What a non-editable install (a wheel, the Docker image) carries beside the modules."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_the_builtin_models_the_migrations_and_the_console(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         str(ROOT), "-w", str(tmp_path)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("sitetune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for model in ("lv-ct", "flair-lesion"):
        assert {f"sitetune/models/builtin/{model}/card.json",
                f"sitetune/models/builtin/{model}/weights.pt"} <= names  # fmt: skip
    migrations = {p.name for p in (ROOT / "sitetune/migrations/versions").glob("*.py")}
    assert {f"sitetune/migrations/versions/{m}" for m in migrations} <= names
    assert "sitetune/migrations/script.py.mako" in names
    built = ROOT / "sitetune/console/dist/index.html"
    if built.is_file():  # `make console` ran (it does before `make test`)
        assert {"sitetune/console/dist/index.html", "sitetune/console/dist/console.js"} <= names
