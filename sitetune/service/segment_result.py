"""The JSON summary and stored files of a segmentation (API.md, POST /v1/segment)."""

from __future__ import annotations

import time

import numpy as np

from sitetune.imaging.nifti import save_nifti
from sitetune.imaging.seg import segmentation_from_labels
from sitetune.imaging.volume import Volume
from sitetune.models.inference import Segmentation
from sitetune.models.registry import ModelVersion
from sitetune.results import ResultStore, input_summary, model_summary


def label_volumes(labels: np.ndarray, volume: Volume, version: ModelVersion) -> dict:
    """Per label: volume in mL (first phase), and per phase for 4D input."""
    voxel_ml = volume.voxel_volume_ml
    frames = [labels] if labels.ndim == 3 else [labels[..., t] for t in range(labels.shape[3])]
    out = {}
    for value, name in version.card.label_names.items():
        per_phase = [float((frame == value).sum() * voxel_ml) for frame in frames]
        entry = {"volume_ml": round(per_phase[0], 3)}
        if volume.n_phases > 1:
            entry["volume_ml_per_phase"] = [round(v, 3) for v in per_phase]
        out[name] = entry
    return out


def mask_writers(volume: Volume, labels: np.ndarray, version: ModelVersion | None) -> dict:
    """Result files of a label map: the NIfTI mask, and a DICOM SEG for DICOM input
    segmented by a model (``version``)."""
    writers = {"mask.nii.gz": lambda path: save_nifti(volume.with_array(labels), path)}
    if volume.dicom is not None and version is not None:
        structures = {label.value: label.code for label in version.card.labels}

        def write_seg(path):
            first = labels if labels.ndim == 3 else labels[..., 0]
            seg = segmentation_from_labels(
                first,
                volume.phase(0),
                structures,
                algorithm_name=version.name,
                algorithm_version=str(version.version),
            )
            seg.save_as(path)

        writers["seg.dcm"] = write_seg
    return writers


def store_result(
    results: ResultStore,
    kind: str,
    summary: dict,
    writers: dict,
    timings: dict[str, float],
    started: float,
) -> dict:
    """Store ``summary`` (with ``timings_ms``) and the files; return the response body."""
    save_started = time.perf_counter()
    summary["timings_ms"] = timings
    result_id = results.create(kind, summary, writers)
    timings["save"] = round(1000 * (time.perf_counter() - save_started), 1)
    timings["total"] = round(1000 * (time.perf_counter() - started), 1)
    return {"result_id": result_id, **summary}


def store_segmentation(
    results: ResultStore,
    volume: Volume,
    segmentation: Segmentation,
    version: ModelVersion,
    backend: str,
    load_ms: float,
    started: float,
) -> dict:
    """Write the mask (and the SEG for DICOM input) and return the response body."""
    labels = segmentation.labels
    summary = {
        **model_summary(version, backend),
        "labels": label_volumes(labels, volume, version),
        "input": input_summary(volume),
    }
    timings = {"load": round(load_ms, 1), **segmentation.timings_ms}
    return store_result(
        results, "segment", summary, mask_writers(volume, labels, version), timings, started
    )
