"""Compressed transfer syntaxes decode to exactly the uncompressed values.

Two sources: our own phantom series re-encoded (pydicom's encoders for RLE, JPEG-LS and
JPEG 2000 lossless; dcmtk's dcmcjpeg for JPEG Lossless process 14), and the reference
pairs that pydicom's test files and the pydicom-data package ship.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless

from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.imaging.load import load_volume


@pytest.mark.parametrize(
    "syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda s: s.name
)
def test_series_compressed_by_pydicom_loads_identically(small_cardiac_3d, tmp_path, syntax):
    paths = write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.compress(syntax)
        ds.save_as(path)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == syntax
    volume = load_volume(tmp_path / "dcm")
    np.testing.assert_array_equal(volume.array, small_cardiac_3d.image.array)


def test_series_compressed_as_jpeg_lossless_by_dcmtk_loads_identically(small_cardiac_3d, tmp_path):
    dcmcjpeg = shutil.which("dcmcjpeg")
    if dcmcjpeg is None:
        pytest.skip("dcmtk's dcmcjpeg is not installed (apt-get install dcmtk)")
    paths = write_dicom_series(small_cardiac_3d.image, tmp_path / "dcm")
    out = tmp_path / "jpll"
    out.mkdir()
    for path in paths:
        subprocess.run(
            [dcmcjpeg, "+e1", str(path), str(out / path.name)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    assert pydicom.dcmread(next(out.iterdir())).file_meta.TransferSyntaxUID == JPEGLosslessSV1
    volume = load_volume(out)
    np.testing.assert_array_equal(volume.array, small_cardiac_3d.image.array)


@pytest.mark.parametrize(
    ("compressed", "reference"),
    [
        ("MR_small_RLE.dcm", "MR_small.dcm"),
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
        ("693_J2KR.dcm", "693_UNCR.dcm"),
    ],
)
def test_reference_files_decode_to_their_uncompressed_twins(compressed, reference):
    paths = [get_testdata_file(compressed), get_testdata_file(reference)]
    if None in paths:
        pytest.skip(f"{compressed} or {reference} is not available (pydicom-data)")
    a, b = (load_volume(p) for p in paths)
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine)
    # Same values as pydicom's own decode, rescale applied, in (column, row) order.
    ds = pydicom.dcmread(paths[1])
    expected = ds.pixel_array.T * float(ds.get("RescaleSlope", 1)) + float(
        ds.get("RescaleIntercept", 0)
    )
    np.testing.assert_allclose(b.array[:, :, 0], expected, rtol=1e-6)
