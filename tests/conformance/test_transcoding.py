"""A phantom series transcoded by the field's tools (dcmtk, GDCM) into every transfer
syntax the loader claims: the same voxels (lossless), or within the codec's error (lossy),
on the same grid.

Lossy JPEG needs 8- or 12-bit data (dcmcjpeg rescales what does not fit and rewrites the
Modality LUT), so those rows start from an 8-bit / 12-bit copy of the series; errors are
judged in rescaled units (HU), where the loader works.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.load import load_volume
from sitetune.imaging.phantoms.cardiac import cardiac_phantom
from tests.conformance import judges

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Codec:
    name: str
    command: tuple[str, ...]  # the tool and its options; input and output paths follow
    source: str = "16"  # which copy of the series: "16" (int16 HU), "12" or "8" bits
    syntax: str = ""  # the Transfer Syntax UID the output must carry
    max_error: float | None = 0.0  # largest |error| allowed (stored units x slope)
    rmse_fraction: float | None = None  # or: RMSE as a fraction of the image's range


CODECS = [
    Codec("dcmtk jpeg lossless", ("dcmcjpeg", "+e1"), syntax="1.2.840.10008.1.2.4.70"),
    Codec("dcmtk jpeg lossless sv6", ("dcmcjpeg", "+el", "+sv", "6"),
          syntax="1.2.840.10008.1.2.4.57"),
    Codec("dcmtk jpeg baseline (lossy, 8 bit)", ("dcmcjpeg", "+eb"), "8",
          "1.2.840.10008.1.2.4.50", None, 0.02),
    Codec("dcmtk jpeg extended (lossy, 12 bit)", ("dcmcjpeg", "+ee"), "12",
          "1.2.840.10008.1.2.4.51", None, 0.02),
    Codec("dcmtk jpeg-ls lossless", ("dcmcjpls",), syntax="1.2.840.10008.1.2.4.80"),
    Codec("dcmtk jpeg-ls near-lossless", ("dcmcjpls", "+en", "+md", "2"), "12",
          "1.2.840.10008.1.2.4.81", 2.0),
    Codec("dcmtk rle", ("dcmcrle",), syntax="1.2.840.10008.1.2.5"),
    Codec("dcmtk explicit big endian", ("dcmconv", "+tb"), syntax="1.2.840.10008.1.2.2"),
    Codec("dcmtk implicit vr", ("dcmconv", "+ti"), syntax="1.2.840.10008.1.2"),
    Codec("dcmtk deflated", ("dcmconv", "+td"), syntax="1.2.840.10008.1.2.1.99"),
    Codec("gdcm j2k lossless", ("gdcmconv", "--j2k"), syntax="1.2.840.10008.1.2.4.90"),
    Codec("gdcm j2k lossy", ("gdcmconv", "--j2k", "--lossy", "-r", "5"),
          syntax="1.2.840.10008.1.2.4.91", max_error=None, rmse_fraction=0.02),
    Codec("gdcm jpeg-ls lossless", ("gdcmconv", "--jpegls"), syntax="1.2.840.10008.1.2.4.80"),
    Codec("gdcm jpeg lossless", ("gdcmconv", "--jpeg"), syntax="1.2.840.10008.1.2.4.70"),
    Codec("gdcm deflated", ("gdcmconv", "--deflated"), syntax="1.2.840.10008.1.2.1.99"),
    Codec("gdcm implicit vr", ("gdcmconv", "--implicit"), syntax="1.2.840.10008.1.2"),
]  # fmt: skip


def _requantised(files: list[Path], folder: Path, bits: int) -> list[Path]:
    """The series with stored values of ``bits`` bits (unsigned), the same HU up to the
    quantisation step (written with the Modality LUT that maps them back)."""
    folder.mkdir()
    out = []
    for path in files:
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array.astype(np.float64)
        step, low = (8.0, -1024.0) if bits == 8 else (1.0, -1024.0)
        stored = np.clip(np.round((hu - low) / step), 0, 2**bits - 1)
        if bits == 8:
            ds.BitsAllocated = 8
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
        ds.RescaleSlope, ds.RescaleIntercept = f"{step:g}", f"{low:g}"
        ds.PixelData = stored.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
        ds.save_as(folder / path.name)
        out.append(folder / path.name)
    return out


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("transcoding")
    case = cardiac_phantom(5, "A", phases=1, spacing=(2.5, 2.5, 3.5))
    base = write_dicom_series(case.image, root / "16", series_description="heart")
    return {
        "16": base,
        "12": _requantised(base, root / "12", 12),
        "8": _requantised(base, root / "8", 8),
    }


@pytest.mark.parametrize("codec", CODECS, ids=[c.name for c in CODECS])
def test_transcoded_series_loads_to_the_same_voxels_on_the_same_grid(series, codec, tmp_path):
    judges.require(codec.command[0])
    source = series[codec.source]
    out = tmp_path / "out"
    out.mkdir()
    for path in source:
        run = subprocess.run([shutil.which(codec.command[0]), *codec.command[1:], str(path),
                              str(out / path.name)], capture_output=True, text=True)  # fmt: skip
        assert run.returncode == 0, run.stderr
    assert pydicom.dcmread(next(out.iterdir())).file_meta.TransferSyntaxUID == codec.syntax
    original, transcoded = load_volume(source[0].parent), load_volume(out)
    assert transcoded.shape == original.shape
    assert np.allclose(transcoded.affine, original.affine, atol=1e-6)
    error = transcoded.array.astype(np.float64) - original.array
    if codec.max_error is not None:
        slope = float(pydicom.dcmread(source[0]).RescaleSlope)
        assert np.abs(error).max() <= codec.max_error * slope
    else:
        span = float(original.array.max() - original.array.min())
        assert np.sqrt(np.mean(error**2)) <= codec.rmse_fraction * span
