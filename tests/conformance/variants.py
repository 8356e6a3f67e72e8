"""Header variants seen in real exports, made from one phantom series.

Each variant rewrites the instances of a base series the way a scanner, an anonymiser or
a PACS does, and says what a user should get: ``accept`` (the same image, so the same
mask as the base where ``same_image``), or a refusal with its error code. Legacy
converted enhanced multi-frame objects come from highdicom's converter (a field library),
not from our writer.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber", "SeriesNumber", "Laterality",
    "PatientOrientation", "PositionReferenceIndicator", "KVP", "AcquisitionNumber",
    "SliceLocation",
)  # fmt: skip
TYPE3 = (
    "SeriesDescription", "Manufacturer", "ManufacturerModelName", "SoftwareVersions",
    "ContentDate", "ContentTime", "SeriesDate", "SeriesTime", "BodyPartExamined",
    "PatientPosition", "RescaleType", "SliceThickness",
)  # fmt: skip


@dataclass
class Variant:
    """A way of rewriting a series, and what the service must answer for it."""

    name: str
    rewrite: Callable[[list[Dataset]], list[Dataset]]
    refused: str | None = None  # the error code, when the service must refuse it
    same_image: bool = True  # the voxels and grid equal the base series'
    extra: dict = field(default_factory=dict)  # form fields to send with the upload

    def write(self, base: list[Path], folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        datasets = self.rewrite([pydicom.dcmread(p) for p in base])
        for i, ds in enumerate(datasets):
            ds.save_as(folder / f"{i:04d}.dcm", enforce_file_format=False)
        return folder


def _delete(keywords):
    def rewrite(datasets):
        for ds in datasets:
            for keyword in keywords:
                if keyword in ds:
                    delattr(ds, keyword)
        return datasets

    return rewrite


def anonymised(datasets):
    """As an anonymiser does: names gone, dates shifted, every UID replaced consistently."""
    new = {}

    def uid(old):
        return new.setdefault(str(old), generate_uid())

    for ds in datasets:
        ds.PatientName, ds.PatientID = "", "ANON0001"
        for keyword in ("StudyDate", "SeriesDate", "ContentDate"):
            if ds.get(keyword):
                day = datetime.datetime.strptime(ds[keyword].value, "%Y%m%d")
                ds[keyword].value = (day - datetime.timedelta(days=1234)).strftime("%Y%m%d")
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                        "FrameOfReferenceUID"):  # fmt: skip
            ds[keyword].value = uid(ds[keyword].value)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "sitetune test anonymiser"
    return datasets


def negative_spacing(datasets):
    for ds in datasets:
        ds.SpacingBetweenSlices = f"-{float(ds.SliceThickness):g}"
    return datasets


def descending(datasets):
    """Instance numbers run against the slice normal (positions descend)."""
    n = len(datasets)
    for ds in datasets:
        ds.InstanceNumber = n + 1 - int(ds.InstanceNumber)
    return datasets[::-1]


def monochrome1(datasets):
    """MONOCHROME1 changes the display only: stored values and rescale are unchanged."""
    for ds in datasets:
        ds.PhotometricInterpretation = "MONOCHROME1"
    return datasets


def unsigned_with_rescale(datasets):
    """Unsigned stored values with Rescale Intercept -1024 (most CT scanners)."""
    for ds in datasets:
        hu = ds.pixel_array.astype(np.int32)
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
    return datasets


def float_slope(datasets):
    """Rescale Slope 0.5: stored values twice the HU."""
    for ds in datasets:
        hu = ds.pixel_array.astype(np.int32)
        ds.RescaleSlope = "0.5"
        ds.RescaleIntercept = "-0.0"
        ds.PixelData = (2 * hu).astype(np.int16).tobytes()
    return datasets


def private_tags(datasets):
    for ds in datasets:
        block = ds.private_block(0x0029, "SITETUNE TEST", create=True)
        block.add_new(0x10, "LO", "vendor private text")
        block.add_new(0x11, "OB", b"\x00\x01\x02\x03")
        item = Dataset()
        item.add_new(0x00091001, "DS", "1.5")  # no creator for it either
        block.add_new(0x12, "SQ", Sequence([item]))
        ds.add_new(0x00431001, "UN", b"\x12\x34")  # an unknown private element, no creator
    return datasets


def gantry_tilt(datasets):
    """Positions sheared along y with z, as a tilted gantry acquires (15 degrees)."""
    z0 = float(datasets[0].ImagePositionPatient[2])
    slope = np.tan(np.radians(15.0))
    for ds in datasets:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [f"{x:.6f}", f"{y + slope * (z - z0):.6f}", f"{z:.6f}"]
        ds.GantryDetectorTilt = "15"
    return datasets


def localizer_mixed(datasets):
    """A sagittal scout sent within the series, as scanners export it."""
    scout = copy.deepcopy(datasets[0])
    scout.SOPInstanceUID = generate_uid()
    scout.file_meta.MediaStorageSOPInstanceUID = scout.SOPInstanceUID
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
    scout.InstanceNumber = 999
    return [scout, *datasets]


def localizer_only(datasets):
    for ds in datasets:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    return datasets


def second_reconstruction(datasets):
    """The same study sent with a second reconstruction (another series, same geometry)."""
    other = copy.deepcopy(datasets)
    series = generate_uid()
    for ds in other:
        ds.SeriesInstanceUID = series
        ds.SeriesNumber = 200
        ds.SeriesDescription = "heart sharp kernel"
        ds.ConvolutionKernel = "B70f"
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return [*datasets, *other]


def duplicate_copy(datasets):
    """One instance sent twice (the same SOP Instance UID and content)."""
    return [*datasets, copy.deepcopy(datasets[len(datasets) // 2])]


def duplicate_uid(datasets):
    """Two different slices sharing one SOP Instance UID."""
    datasets[1].SOPInstanceUID = datasets[0].SOPInstanceUID
    datasets[1].file_meta.MediaStorageSOPInstanceUID = datasets[0].SOPInstanceUID
    return datasets


def no_frame_of_reference(datasets):
    for ds in datasets:
        del ds.FrameOfReferenceUID
    return datasets


def legacy_enhanced(datasets):
    """One Legacy Converted Enhanced CT/MR Image object (highdicom's converter)."""
    import highdicom as hd

    converter = {
        "CT": hd.legacy.LegacyConvertedEnhancedCTImage,
        "MR": hd.legacy.LegacyConvertedEnhancedMRImage,
    }[datasets[0].Modality]
    multiframe = converter(
        datasets,
        series_instance_uid=generate_uid(),
        series_number=300,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    multiframe.SeriesDescription = datasets[0].get("SeriesDescription", "")
    return [multiframe]


VARIANTS = [
    Variant("type2_missing", _delete(TYPE2)),
    Variant("type3_missing", _delete(TYPE3)),
    Variant("anonymised", anonymised),
    Variant("no_slice_thickness", _delete(("SliceThickness",))),
    Variant("negative_spacing_between_slices", negative_spacing),
    Variant("positions_descending", descending),
    Variant("monochrome1", monochrome1),
    Variant("unsigned_with_rescale", unsigned_with_rescale),
    Variant("float_rescale_slope", float_slope),
    Variant("private_tags", private_tags),
    Variant("gantry_tilt", gantry_tilt, same_image=False),
    Variant("legacy_enhanced_multiframe", legacy_enhanced),
    Variant("localizer_mixed_in", localizer_mixed),
    Variant("localizer_only", localizer_only, refused="localizer"),
    Variant("second_reconstruction", second_reconstruction, refused="ambiguous_series"),
    Variant("duplicate_instance_copy", duplicate_copy),
    Variant("duplicate_sop_instance_uid", duplicate_uid, refused="duplicate_instances"),
    Variant("no_frame_of_reference", no_frame_of_reference),
]
