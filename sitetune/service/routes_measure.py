"""Measurement routes (role clinical): LV wall thickness at ED and ES; lesion volume."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse

from sitetune.errors import InputError, InvalidInput
from sitetune.imaging.nifti import save_nifti
from sitetune.imaging.volume import Volume
from sitetune.measure.labels import as_label_map
from sitetune.measure.lesions import (
    DEFAULT_MIN_LESION_ML,
    LESION_LABELS,
    check_lesion_options,
    lesion_statistics,
)
from sitetune.measure.thickness import Surfaces
from sitetune.measure.ventricle import LV_LABELS, measure_ventricle
from sitetune.models.registry import ModelVersion
from sitetune.results import input_summary, model_summary
from sitetune.service.deps import Clinical, state
from sitetune.service.metrics import observe_stages
from sitetune.service.segment_result import mask_writers, store_result
from sitetune.service.state import AppState
from sitetune.service.uploads import load_upload

router = APIRouter()


class PhasesMeasured(StrEnum):
    ED_ES = "ed_es"
    ALL = "all"


def _labels_from_upload(
    app: AppState,
    file: UploadFile | None,
    mask: UploadFile | None,
    model: str,
    version: str | None,
    series: str | None,
    expected: dict[int, str],
    *,
    three_d: bool = False,
) -> tuple[Volume, np.ndarray, ModelVersion | None, str | None, dict[str, float]]:
    """The input volume and its label map: the uploaded ``mask``, or ``file`` segmented
    (``three_d``: refuse 4D input before segmenting it)."""
    if (file is None or not file.filename) == (mask is None or not mask.filename):
        raise InputError(
            "send exactly one of 'file' (an image to segment) or 'mask' (a label map)",
            code="file_or_mask",
        )
    started = time.perf_counter()
    upload, field = (mask, "mask") if mask is not None and mask.filename else (file, "file")
    volume = load_upload(upload, app.settings, series=series, field=field)
    timings = {"load": round(1000 * (time.perf_counter() - started), 1)}
    if three_d and volume.n_phases > 1:
        raise InvalidInput(
            f"this measurement needs a 3D {field}; got {volume.n_phases} phases (4D)",
            code="not_3d",
        )
    if field == "mask":
        return volume, as_label_map(volume.array, expected), None, None, timings
    chosen = app.models.choose(volume, model, version)
    missing = set(expected) - {label.value for label in chosen.card.labels}
    if missing:
        raise InputError(
            f"model {chosen.ref} does not produce labels {sorted(missing)} this measurement needs",
            code="wrong_model",
        )
    segmentation, backend = app.models.segment(volume, chosen)
    timings.update(segmentation.timings_ms)
    return volume, segmentation.labels, chosen, backend, timings


def _store(
    app: AppState,
    kind: str,
    volume: Volume,
    labels: np.ndarray,
    chosen: ModelVersion | None,
    backend: str | None,
    measurement: dict,
    maps: dict[str, Volume],
    timings: dict[str, float],
    started: float,
) -> dict:
    """Store a measurement: its JSON, the label map (and SEG), and its NIfTI ``maps``;
    record the model's stage times. Returns the response body."""
    summary = {**model_summary(chosen, backend), **measurement, "input": input_summary(volume)}
    writers = mask_writers(volume, labels, chosen)
    for filename, image in maps.items():
        writers[filename] = lambda path, image=image: save_nifti(image, path)
    body = store_result(app.results, kind, summary, writers, timings, started)
    if chosen is not None:
        observe_stages(chosen, backend, timings)
    return body


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
    app = state(request)
    started = time.perf_counter()
    volume, labels, chosen, backend, timings = _labels_from_upload(
        app, file, mask, model, version, series, LV_LABELS
    )
    measuring = time.perf_counter()
    report = measure_ventricle(
        labels,
        volume.affine,
        volume.phases,
        ed=ed,
        es=es,
        all_phases=phases is PhasesMeasured.ALL,
        surfaces=surfaces,
    )
    timings["thickness"] = round(1000 * (time.perf_counter() - measuring), 1)
    return _store(
        app, "thickness", volume, labels, chosen, backend, report.to_json(),
        {"thickness.nii.gz": volume.with_array(report.thickness_map)}, timings, started,
    )  # fmt: skip


@router.get("/v1/results/{result_id}/thickness")
def result_thickness(request: Request, result_id: str, _: Clinical):
    """The thickness map in mm (float32 NIfTI on the input grid, 0 outside the wall)."""
    path = state(request).results.file(result_id, "thickness.nii.gz", "thickness map")
    return FileResponse(
        path, media_type="application/gzip", filename=f"{result_id}-thickness.nii.gz"
    )


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
    app = state(request)
    started = time.perf_counter()
    connectivity, min_lesion_ml = check_lesion_options(connectivity, min_lesion_ml)
    volume, labels, chosen, backend, timings = _labels_from_upload(
        app, file, mask, model, version, series, LESION_LABELS, three_d=True
    )
    measuring = time.perf_counter()
    report = lesion_statistics(
        labels == 1,
        volume.native_affine,
        connectivity=connectivity,
        min_lesion_ml=min_lesion_ml,
    )
    timings["lesions"] = round(1000 * (time.perf_counter() - measuring), 1)
    measurement = report.to_json() | {"centroid_frame": volume.native_frame.value}
    return _store(
        app, "lesion-volume", volume, labels, chosen, backend, measurement,
        {"lesions.nii.gz": volume.with_array(report.instances)}, timings, started,
    )  # fmt: skip


@router.get("/v1/results/{result_id}/lesions")
def result_lesions(request: Request, result_id: str, _: Clinical):
    """The counted lesions as a NIfTI label map: each voxel holds its lesion's ``id``."""
    path = state(request).results.file(result_id, "lesions.nii.gz", "lesion map")
    return FileResponse(path, media_type="application/gzip", filename=f"{result_id}-lesions.nii.gz")
