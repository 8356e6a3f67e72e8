"""Write a `Volume` as a classic single-frame DICOM series (CT or MR Image Storage).

Used to turn phantoms into DICOM with the same ground truth as their NIfTI form, so every
input path is exercised. Pixel values must already be integers (the phantoms quantise
them as a scanner would); positions are written with full decimal-string precision.
"""

from __future__ import annotations

import datetime
from enum import StrEnum
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from sitetune import __version__
from sitetune.imaging.volume import LPS_TO_RAS, Volume

_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage}


class PhaseLayout(StrEnum):
    """How the phases of a 4D volume are laid out in DICOM."""

    SERIES = "series"  # one series per phase, each tagged with its cardiac phase
    TEMPORAL = "temporal"  # one series; instances repeat positions with temporal tags


def _ds(value: float) -> str:
    """A Decimal String of at most 16 characters with as many digits as fit."""
    for digits in range(10, 0, -1):
        text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
        if len(text) <= 16:
            return "0" if text in ("-0", "") else text
    return f"{value:.6g}"


def _study(patient_id: str, study_uid: str, when: datetime.datetime) -> Dataset:
    ds = Dataset()
    ds.PatientName = f"Phantom^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = ds.ContentDate = ds.SeriesDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = ds.SeriesTime = when.strftime("%H%M%S")
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "sitetune phantoms"
    ds.ManufacturerModelName = "synthetic"
    ds.SoftwareVersions = __version__
    return ds


def write_dicom_series(
    volume: Volume,
    folder: Path | str,
    *,
    patient_id: str = "PHANTOM",
    series_description: str = "phantom",
    phase_layout: PhaseLayout | str = PhaseLayout.SERIES,
    body_part: str | None = None,
    study_uid: str | None = None,
) -> list[Path]:
    """Write ``volume`` (3D or 4D, integer-valued) as one file per slice under ``folder``.

    Phases of a 4D volume carry Nominal Percentage of Cardiac Phase (from
    ``volume.phases``, else evenly spread over the cycle), Trigger Time and Temporal
    Position Identifier. Returns the written paths.
    """
    phase_layout = PhaseLayout(phase_layout)
    modality = volume.modality or "CT"
    if modality not in _SOP_CLASS:
        raise ValueError(f"modality must be one of {sorted(_SOP_CLASS)}, got {modality!r}")
    array = volume.array if volume.array.ndim == 4 else volume.array[..., None]
    if not np.array_equal(array, np.round(array)):
        raise ValueError("pixel values must be integers; quantise the volume first")
    signed = array.min() < 0
    stored = array.astype(np.int16 if signed else np.uint16)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS_TO_RAS @ volume.affine
    row_cos = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    col_cos = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    spacing = volume.spacing
    when = datetime.datetime(2026, 1, 1, 12, 0, 0)
    study_uid = study_uid or generate_uid()
    frame_of_reference = generate_uid()
    n_phases = array.shape[3]
    single_series_uid = generate_uid()
    paths = []
    for t in range(n_phases):
        info = volume.phases[t]
        percent = info.nominal_percentage
        if percent is None:
            percent = 100.0 * t / n_phases
        trigger = info.trigger_time_ms if info.trigger_time_ms is not None else 10.0 * percent
        per_phase = phase_layout is PhaseLayout.SERIES
        series_uid = generate_uid() if per_phase else single_series_uid
        for k in range(array.shape[2]):
            ds = _study(patient_id, study_uid, when)
            ds.Modality = modality
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = 100 + t if per_phase else 100
            ds.SeriesDescription = (
                f"{series_description} {percent:.0f}%"
                if per_phase and n_phases > 1
                else series_description
            )
            if body_part:
                ds.BodyPartExamined = body_part
            ds.PatientPosition = "HFS"
            ds.Laterality = ""
            ds.FrameOfReferenceUID = frame_of_reference
            ds.PositionReferenceIndicator = ""
            ds.SOPClassUID = _SOP_CLASS[modality]
            ds.SOPInstanceUID = generate_uid()
            ds.InstanceNumber = k + 1 if per_phase else t * array.shape[2] + k + 1
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.PatientOrientation = ""
            ds.ImagePositionPatient = [_ds(v) for v in (lps @ [0, 0, k, 1])[:3]]
            ds.ImageOrientationPatient = [_ds(v) for v in (*row_cos, *col_cos)]
            ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
            ds.SliceThickness = _ds(spacing[2])
            ds.SliceLocation = _ds(float(np.cross(row_cos, col_cos) @ (lps @ [0, 0, k, 1])[:3]))
            if n_phases > 1:
                ds.NominalPercentageOfCardiacPhase = float(percent)
                ds.TriggerTime = _ds(trigger)
                ds.TemporalPositionIdentifier = t + 1
                ds.NumberOfTemporalPositions = n_phases
            _pixel_module(ds, stored[:, :, k, t].T, signed, modality)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds.file_meta = meta
            ds.preamble = b"\x00" * 128
            path = folder / f"phase{t:02d}_slice{k:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def _pixel_module(ds: Dataset, plane: np.ndarray, signed: bool, modality: str) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = plane.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(plane).tobytes()
    if modality == "CT":
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.KVP = "120"
        ds.AcquisitionNumber = 1
    else:
        ds.ScanningSequence = ["SE", "IR"]
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.RepetitionTime = "9000"
        ds.EchoTime = "120"
        ds.InversionTime = "2500"
        ds.EchoTrainLength = 1
        ds.SequenceName = "FLAIR"
        ds.ImagedNucleus = "1H"
        ds.MagneticFieldStrength = "3"
