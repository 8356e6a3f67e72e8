"""One entry point for every upload: NIfTI file, DICOM zip / folder / file."""

from __future__ import annotations

from pathlib import Path

from sitetune.errors import UnsupportedInput
from sitetune.imaging.archive import ZipLimits, is_zip
from sitetune.imaging.dicom import load_dicom
from sitetune.imaging.nifti import load_nifti
from sitetune.imaging.volume import ImageLimits, Volume

_GZIP = b"\x1f\x8b"


def sniff(path: Path) -> str:
    """The kind of an upload by its content: ``"nifti"``, ``"zip"``, ``"dicom"`` or ``"dir"``."""
    if path.is_dir():
        return "dir"
    with path.open("rb") as f:
        head = f.read(352)
    if is_zip(path):
        return "zip"
    if head[:2] == _GZIP or head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] == b"n+2\x00":
        return "nifti"
    if head[128:132] == b"DICM" or path.suffix.lower() == ".dcm":
        return "dicom"
    raise UnsupportedInput(
        f"{path.name} is not NIfTI (.nii/.nii.gz), DICOM, or a zip of DICOM files",
    )


def load_volume(
    path: Path | str,
    *,
    series: str | None = None,
    modality: str | None = None,
    limits: ZipLimits | None = None,
    decode: bool = True,
    image_limits: ImageLimits | None = None,
) -> Volume:
    """Load any supported upload into a `Volume` (see `sitetune.imaging.volume`).

    Args:
        path: a ``.nii``/``.nii.gz`` file, a zip of one DICOM series or one multi-phase
            study, a folder of DICOM files, or one (multi-frame) DICOM file.
        series: SeriesInstanceUID or SeriesNumber, to pick one of several series.
        modality: the modality of a NIfTI image, which NIfTI does not record.
        limits: bounds applied to zip uploads.
        decode: False to read DICOM geometry and headers only (no pixel decoding).
        image_limits: sizes the input may declare (`PayloadTooLarge` beyond them).
    """
    path = Path(path)
    kind = sniff(path)
    if kind == "nifti":
        return load_nifti(path, modality=modality, limits=image_limits)
    return load_dicom(path, series=series, limits=limits, decode=decode, image_limits=image_limits)
