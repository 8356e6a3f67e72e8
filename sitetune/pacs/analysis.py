"""One received series (or study) -> the analysis pipeline -> DICOM SEG(s) and a TID 1500
SR written to an output folder, for delivery.

The task follows from the model's coded labels (`sitetune.analysis.tasks.measured_task`):
wall thickness at ED and ES for an LV model, lesion volume for a lesion model, label
volumes otherwise. Which objects are written is `sitetune.analysis.outputs`' policy, the
same as for the HTTP results; an object that cannot be made (e.g. no SEG for a series
without a Frame of Reference) is recorded in the summary's ``outputs`` with the reason,
and the others are delivered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from sitetune.analysis.pipeline import Pipeline
from sitetune.analysis.tasks import Task
from sitetune.errors import InvalidInput
from sitetune.imaging.dicom import read_datasets, volume_from_datasets
from sitetune.imaging.volume import ImageLimits

MEASUREMENT_KEY = {Task.WALL_THICKNESS: "thickness", Task.LESION_VOLUME: "lesions"}


@dataclass
class AnalysisOutput:
    summary: dict  # model, measurements, outputs, timings
    files: list[dict]  # {kind: "seg"|"sr", name, path, sop_instance_uid}


def analyse(
    files: list[Path],
    pipeline: Pipeline,
    model: str,
    folder: Path,
    limits: ImageLimits | None = None,
) -> AnalysisOutput:
    """Segment and measure the instances in ``files`` with ``model``'s production version;
    write the SEG(s) and SR under ``folder``."""
    started = time.perf_counter()
    datasets, names = read_datasets(((p.name, p.read_bytes()) for p in files), limits)
    volume = volume_from_datasets(datasets, names, limits=limits)
    timings = {"load": round(1000 * (time.perf_counter() - started), 1)}
    analysis = pipeline.run(volume, None, model=model, timings_ms=timings)
    task = analysis.task
    built = time.perf_counter()
    outputs = analysis.dicom_outputs()
    if not outputs.files:
        raise InvalidInput(
            f"no DICOM output could be made: {outputs.unavailable}", code="no_outputs"
        )
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dataset in outputs.files.items():
        path = folder / name
        dataset.save_as(path)
        written.append(
            {"kind": outputs.kinds[name], "name": name, "path": str(path),
             "sop_instance_uid": str(dataset.SOPInstanceUID)}
        )  # fmt: skip
    timings["outputs"] = round(1000 * (time.perf_counter() - built), 1)
    timings["total"] = round(1000 * (time.perf_counter() - started), 1)
    summary = {
        **analysis.model_summary(),
        "task": task.value,
        "input": analysis.input_summary(),
        MEASUREMENT_KEY.get(task, "segmentation"): analysis.measurement,
        "outputs": {
            "files": [item["name"] for item in written],
            "unavailable": outputs.unavailable,
        },
        "provenance": analysis.provenance,
        "timings_ms": timings,
    }
    return AnalysisOutput(summary, written)
