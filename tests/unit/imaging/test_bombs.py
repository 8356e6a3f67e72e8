"""Sizes an input declares are checked before anything is allocated for them."""

from __future__ import annotations

import gzip
import struct
import time
import zlib

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, JPEG2000Lossless

from sitetune.errors import PayloadTooLarge
from sitetune.imaging.load import load_volume
from sitetune.imaging.volume import ImageLimits


def nifti_bomb(path, shape=(1024, 1024, 1536)):
    """A .nii.gz of a few kilobytes whose header declares ``shape`` int16 voxels."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4 + b"\0" * 4096
    path.write_bytes(gzip.compress(raw))
    return path


def _ct(rows=64, columns=64) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, pydicom.uid.generate_uid()
    ds.StudyInstanceUID = ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.FrameOfReferenceUID = pydicom.uid.generate_uid()
    ds.Modality = "CT"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def deflated_bomb(path, inflated_bytes: int):
    """A deflated CT instance whose dataset inflates to more than ``inflated_bytes``."""
    ds = _ct()
    ds.PixelData = b"\0" * (64 * 64 * 2)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    meta_end = (
        132 + 12 + pydicom.filereader.read_file_meta_info(path).FileMetaInformationGroupLength
    )
    # a private element of zeros, inflating to the bomb size
    element = struct.pack("<HH", 0x0009, 0x1010) + b"OB\0\0" + struct.pack("<I", inflated_bytes)
    body = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [raw[:meta_end], body.compress(element)]
    zeros = b"\0" * (1 << 22)
    for _ in range(inflated_bytes // len(zeros) + 1):
        out.append(body.compress(zeros))
    out.append(body.flush())
    path.write_bytes(b"".join(out))
    return path


def j2k_bomb(path, declared=(65535, 65535)):
    """A JPEG 2000 CT instance of 64 x 64 whose codestream declares ``declared`` pixels."""
    ds = _ct()
    siz = struct.pack(">HHHIIIIIIIIH", 0xFF51, 41, 0, declared[0], declared[1], 0, 0,
                      declared[0], declared[1], 0, 0, 1) + bytes([15, 1, 1])  # fmt: skip
    ds.PixelData = encapsulate([b"\xff\x4f" + siz + b"\xff\xd9"])
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_nifti_declaring_a_huge_grid_is_refused_before_allocation(tmp_path):
    path = nifti_bomb(tmp_path / "bomb.nii.gz")
    assert path.stat().st_size < 64 << 10
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match="1024 x 1024 x 1536"):
        load_volume(path)
    assert time.perf_counter() - started < 5


def test_a_deflated_dicom_bomb_is_refused_while_inflating(tmp_path):
    path = deflated_bomb(tmp_path / "bomb.dcm", 256 << 20)
    assert path.stat().st_size < 2 << 20
    with pytest.raises(PayloadTooLarge, match="inflates past"):
        load_volume(path, image_limits=ImageLimits(max_inflated_bytes=64 << 20))


def test_a_jpeg2000_codestream_larger_than_its_header_is_refused_before_decoding(tmp_path):
    with pytest.raises(PayloadTooLarge, match="65535 x 65535"):
        load_volume(j2k_bomb(tmp_path / "j2k.dcm"))


def test_a_header_declaring_65535_squared_is_refused(tmp_path):
    ds = _ct(65535, 65535)
    ds.PixelData = b"\0" * 16
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.save_as(tmp_path / "big.dcm", enforce_file_format=True)
    with pytest.raises(PayloadTooLarge, match="voxels"):
        load_volume(tmp_path / "big.dcm", image_limits=ImageLimits(max_voxels=1 << 28))


def test_sizes_within_the_limits_load(tmp_path):
    small = nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4))
    nib.save(small, tmp_path / "ok.nii.gz")
    assert load_volume(tmp_path / "ok.nii.gz").shape == (8, 8, 8)
