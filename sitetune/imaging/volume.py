"""The one image type every sitetune component passes around.

Coordinate convention
---------------------
``Volume.array`` is indexed ``[i, j, k]`` (3D) or ``[i, j, k, t]`` (4D, one frame per
cardiac phase), exactly as nibabel indexes a NIfTI image. ``Volume.affine`` maps a voxel
index ``(i, j, k, 1)`` to world millimetres in **RAS+** (x grows towards the patient's
Right, y towards Anterior, z towards Superior), the NIfTI / nibabel / MONAI convention.
DICOM's patient system is LPS+ (x towards Left, y towards Posterior, z towards head), so
``ras = diag(-1, -1, 1) @ lps``. For DICOM input, index ``i`` runs along a row (increasing
column number), ``j`` down a column (increasing row number) and ``k`` along the slice
normal ``row_direction x column_direction``, in ascending order of position (never by
InstanceNumber).

The input's *own* frame is kept too (``native_frame``): measurements reported in world
coordinates use the NIfTI affine for NIfTI input and DICOM patient LPS for DICOM input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class ImageLimits:
    """What an input may *declare* before anything is allocated for it: sizes in headers
    (NIfTI dims, DICOM rows x columns x frames, a JPEG 2000 codestream's image size) and
    bytes that decompress (deflated DICOM). Over them: `PayloadTooLarge` (413)."""

    max_voxels: int = 1 << 28  # every phase together (268 M voxels: 1 GiB as float32)
    max_inflated_bytes: int = 4 << 30  # one deflated DICOM dataset, inflated

    def check_voxels(self, shape, what: str) -> None:
        from sitetune.errors import PayloadTooLarge

        voxels = int(np.prod([int(n) for n in shape], dtype=np.float64))
        if voxels > self.max_voxels:
            raise PayloadTooLarge(
                f"{what} declares {' x '.join(str(int(n)) for n in shape)} = {voxels} voxels; "
                f"at most {self.max_voxels} are accepted (SITETUNE_MAX_INPUT_VOXELS)",
                code="payload_too_large",
            )


class WorldFrame(StrEnum):
    """World coordinate systems an input can come with."""

    RAS = "RAS"  # NIfTI scanner/aligned space
    LPS = "LPS"  # DICOM patient coordinate system


@dataclass(frozen=True)
class PhaseInfo:
    """What is known about one temporal frame (cardiac phase) of a 4D volume."""

    index: int
    nominal_percentage: float | None = None  # Nominal Percentage of Cardiac Phase (0-100)
    trigger_time_ms: float | None = None  # Trigger Time / Nominal Cardiac Trigger Delay Time
    temporal_position: int | None = None  # Temporal Position Index / Identifier
    series_uid: str | None = None  # the DICOM series the phase came from, when known


@dataclass(frozen=True)
class SliceSource:
    """One DICOM frame a voxel plane ``k`` of a phase came from."""

    dataset_index: int  # index into ``DicomSource.datasets``
    frame_number: int | None  # 1-based frame of a multi-frame object, None for single-frame


@dataclass
class DicomSource:
    """References back to the DICOM instances a volume was read from.

    ``datasets`` hold the headers (pixel data dropped) in the order they were read;
    ``slices[t][k]`` names the frame that became voxel plane ``k`` of phase ``t``.
    """

    study_uid: str
    frame_of_reference_uid: str | None
    datasets: list  # list[pydicom.Dataset]
    slices: list[list[SliceSource]]

    def phase_datasets(self, phase: int = 0) -> list:
        """The distinct source datasets of one phase, in slice order."""
        seen: dict[int, None] = {}
        for s in self.slices[phase]:
            seen.setdefault(s.dataset_index, None)
        return [self.datasets[i] for i in seen]


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in mL: the determinant of the affine's 3x3 part, mm^3 / 1000."""
    return abs(float(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along i, j, k: the norms of the affine's first three columns."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


@dataclass
class Volume:
    """An image (or label map) with exact geometry.

    Attributes:
        array: ``(X, Y, Z)`` or ``(X, Y, Z, T)``; float32 intensities for images
            (rescale slope/intercept applied), integers for label maps.
        affine: ``(4, 4)`` float64, voxel index -> RAS+ mm.
        modality: DICOM modality string (``"CT"``, ``"MR"``) or None when unknown.
        phases: one ``PhaseInfo`` per frame along ``T`` (a single entry for 3D).
        native_frame: the world frame the input came in (RAS for NIfTI, LPS for DICOM).
        dicom: references to the source instances for DICOM input, else None.
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str | None = None
    phases: Sequence[PhaseInfo] = field(default_factory=lambda: (PhaseInfo(0),))
    native_frame: WorldFrame = WorldFrame.RAS
    dicom: DicomSource | None = None

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {self.affine.shape}")
        if self.array.ndim not in (3, 4):
            raise ValueError(f"array must be 3D or 4D, got shape {self.array.shape}")
        if len(self.phases) != self.n_phases:
            raise ValueError(f"phases lists {len(self.phases)} entries for {self.n_phases} frames")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)``."""
        return tuple(self.array.shape[:3])

    @property
    def n_phases(self) -> int:
        return 1 if self.array.ndim == 3 else self.array.shape[3]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k."""
        return spacing_from_affine(self.affine)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (the determinant of the affine, mm^3 / 1000)."""
        return voxel_volume_ml(self.affine)

    @property
    def native_affine(self) -> np.ndarray:
        """Voxel index -> world mm in the input's own frame (LPS for DICOM input)."""
        return LPS_TO_RAS @ self.affine if self.native_frame is WorldFrame.LPS else self.affine

    def phase(self, t: int) -> Volume:
        """Phase ``t`` as a 3D volume with the same geometry and source references."""
        if not 0 <= t < self.n_phases:
            raise IndexError(f"phase {t} out of range 0..{self.n_phases - 1}")
        array = self.array if self.array.ndim == 3 else self.array[..., t]
        dicom = self.dicom
        if dicom is not None:
            dicom = replace(dicom, slices=[dicom.slices[t]])
        return replace(self, array=array, phases=(replace(self.phases[t], index=0),), dicom=dicom)

    def world_coordinates(self, frame: WorldFrame | str = WorldFrame.RAS) -> np.ndarray:
        """World mm of every voxel centre, shape ``(X, Y, Z, 3)``, in ``frame``."""
        frame = WorldFrame(frame)
        affine = self.affine if frame is WorldFrame.RAS else LPS_TO_RAS @ self.affine
        idx = np.stack(np.meshgrid(*(np.arange(n) for n in self.shape), indexing="ij"), -1)
        return idx.astype(np.float64) @ affine[:3, :3].T + affine[:3, 3]

    def with_array(self, array: np.ndarray) -> Volume:
        """A volume on the same grid (and source references) holding ``array``."""
        if array.shape[:3] != self.shape:
            raise ValueError(f"array shape {array.shape} does not match grid {self.shape}")
        phases = self.phases if array.ndim == self.array.ndim else (PhaseInfo(0),)
        return replace(self, array=array, phases=phases)
