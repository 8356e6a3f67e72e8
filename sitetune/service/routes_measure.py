"""Measurement routes (role clinical): LV wall thickness at ED and ES; lesion volume."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, Response

from sitetune.analysis.pipeline import LesionOptions, ThicknessOptions
from sitetune.analysis.tasks import Task
from sitetune.measure.labels import Surfaces
from sitetune.measure.lesions import DEFAULT_MIN_LESION_ML
from sitetune.service.deps import Clinical, state
from sitetune.service.uploads import analyse_upload

router = APIRouter()


class ImageFormat(StrEnum):
    PNG = "png"
    SVG = "svg"


class PhasesMeasured(StrEnum):
    ED_ES = "ed_es"
    ALL = "all"


@router.post("/v1/thickness")
def thickness(
    request: Request,
    _: Clinical,
    file: Annotated[UploadFile | None, File()] = None,
    mask: Annotated[UploadFile | None, File()] = None,
    model: Annotated[str, Form()] = "lv-ct",
    version: Annotated[str | None, Form()] = None,
    series: Annotated[str | None, Form()] = None,
    ed: Annotated[int | None, Form()] = None,
    es: Annotated[int | None, Form()] = None,
    phases: Annotated[PhasesMeasured, Form()] = PhasesMeasured.ED_ES,
    surfaces: Annotated[Surfaces, Form()] = Surfaces.FITTED,
) -> dict:
    """LV wall thickness (median, p95, max, mean) at ED and ES, from an image or a mask."""
    options = ThicknessOptions(ed, es, phases is PhasesMeasured.ALL, surfaces)
    return analyse_upload(
        state(request), "thickness", Task.WALL_THICKNESS, file, mask,
        model=model, version=version, series=series, thickness=options,
    )  # fmt: skip


@router.get("/v1/results/{result_id}/thickness")
def result_thickness(request: Request, result_id: str, _: Clinical):
    """The thickness map in mm (float32 NIfTI on the input grid, 0 outside the wall)."""
    path = state(request).results.store.file(result_id, "thickness.nii.gz", "thickness map")
    return FileResponse(
        path, media_type="application/gzip", filename=f"{result_id}-thickness.nii.gz"
    )


@router.get("/v1/results/{result_id}/segments")
def result_segments(request: Request, result_id: str, _: Clinical):
    """The AHA segment of every myocardium voxel (uint8 NIfTI on the input grid, 1..17)."""
    path = state(request).results.store.file(result_id, "segments.nii.gz", "segment map")
    return FileResponse(
        path, media_type="application/gzip", filename=f"{result_id}-segments.nii.gz"
    )


class BullseyeValue(StrEnum):
    THICKNESS = "thickness"
    THICKENING = "thickening"


class BullseyePhase(StrEnum):
    ED = "ed"
    ES = "es"


@router.get("/v1/results/{result_id}/bullseye.{image_format}")
def result_bullseye(
    request: Request,
    result_id: str,
    image_format: ImageFormat,
    _: Clinical,
    phase: BullseyePhase = BullseyePhase.ED,
    value: BullseyeValue = BullseyeValue.THICKNESS,
):
    """The AHA 17-segment bullseye: segment median thickness at ED (``?phase=es``), or the
    thickening (``?value=thickening``)."""
    picture = state(request).results.bullseye(result_id, phase.value, value.value,
                                              image_format.value)  # fmt: skip
    media = "image/png" if image_format is ImageFormat.PNG else "image/svg+xml"
    return Response(picture, media_type=media)


@router.post("/v1/lesion-volume")
def lesion_volume(
    request: Request,
    _: Clinical,
    file: Annotated[UploadFile | None, File()] = None,
    mask: Annotated[UploadFile | None, File()] = None,
    model: Annotated[str, Form()] = "flair-lesion",
    version: Annotated[str | None, Form()] = None,
    series: Annotated[str | None, Form()] = None,
    min_lesion_ml: Annotated[float, Form()] = DEFAULT_MIN_LESION_ML,
    connectivity: Annotated[int, Form()] = 26,
) -> dict:
    """Lesion count, total and per-lesion volume (mL), centroid and box, largest first."""
    options = LesionOptions(min_lesion_ml, connectivity).checked()
    return analyse_upload(
        state(request), "lesion-volume", Task.LESION_VOLUME, file, mask,
        model=model, version=version, series=series, lesions=options,
    )  # fmt: skip


@router.get("/v1/results/{result_id}/lesions")
def result_lesions(request: Request, result_id: str, _: Clinical):
    """The counted lesions as a NIfTI label map: each voxel holds its lesion's ``id``."""
    path = state(request).results.store.file(result_id, "lesions.nii.gz", "lesion map")
    return FileResponse(path, media_type="application/gzip", filename=f"{result_id}-lesions.nii.gz")
