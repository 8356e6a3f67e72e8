"""NIfTI in and out (nibabel), with the geometry rules of `sitetune.imaging.volume`."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from sitetune.errors import InvalidInput, UnsupportedInput
from sitetune.imaging.volume import ImageLimits, PhaseInfo, Volume

logger = logging.getLogger(__name__)


def _nifti_affine(img: nib.Nifti1Image) -> np.ndarray:
    """The affine NIfTI readers must use: sform if set, else qform, else voxel sizes only."""
    sform, sform_code = img.header.get_sform(coded=True)
    if sform is not None and sform_code > 0:
        return sform
    qform, qform_code = img.header.get_qform(coded=True)
    if qform is not None and qform_code > 0:
        return qform
    logger.warning("NIfTI has neither sform nor qform set; using voxel sizes only (Analyze)")
    return np.diag([*img.header.get_zooms()[:3], 1.0])


def load_nifti(
    path: Path | str, *, modality: str | None = None, limits: ImageLimits | None = None
) -> Volume:
    """Read a 3D or 4D NIfTI-1/2 file (``.nii`` or ``.nii.gz``) into a `Volume`.

    The array keeps nibabel's ``[i, j, k(, t)]`` order; scaling (scl_slope/inter) is
    applied, giving float32, unless the file stores unscaled integers (label maps),
    whose dtype is kept. Trailing singleton dimensions beyond the fourth are dropped.

    Raises:
        UnsupportedInput: the file is not NIfTI.
        InvalidInput: the file is truncated, or has fewer than 3 / more than 4 dimensions.
        PayloadTooLarge: the header declares more voxels than ``limits`` allow.
    """
    path = Path(path)
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises a variety of types for foreign files
        raise UnsupportedInput(f"{path.name} is not a readable NIfTI file ({exc})") from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise UnsupportedInput(f"{path.name} is {type(img).__name__}, not NIfTI")
    shape = img.shape
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) not in (3, 4):
        raise InvalidInput(f"{path.name} has shape {img.shape}; a 3D or 4D image is required")
    # the header's dims, checked before the array is allocated (a 2 MiB .nii.gz can
    # declare 1024 x 1024 x 1536 voxels; gzip only yields what the header asks for)
    if any(int(n) <= 0 for n in shape):
        raise InvalidInput(f"{path.name} declares the shape {shape}; every size must be positive")
    (limits or ImageLimits()).check_voxels(shape, path.name)
    try:
        array = np.asarray(img.dataobj).reshape(shape)  # scl_slope/inter applied by nibabel
        if not np.issubdtype(array.dtype, np.integer):
            array = array.astype(np.float32, copy=False)
    except (OSError, EOFError, ValueError, OverflowError, TypeError, gzip.BadGzipFile) as exc:
        raise InvalidInput(f"{path.name} is truncated or corrupt ({exc})") from exc
    phases = tuple(PhaseInfo(t) for t in range(1 if len(shape) == 3 else shape[3]))
    return Volume(array=array, affine=_nifti_affine(img), modality=modality, phases=phases)


def save_nifti(
    volume: Volume | np.ndarray, path: Path | str, affine: np.ndarray | None = None
) -> Path:
    """Write a volume (or an array with ``affine``) as NIfTI-1, with qform and sform set.

    The dtype of the array is kept; use integer arrays for label maps.
    """
    if isinstance(volume, Volume):
        array, affine = volume.array, volume.affine
    else:
        if affine is None:
            raise ValueError("affine is required when saving a bare array")
        array = volume
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm", "msec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path = Path(path)
    nib.save(img, path)
    return path
