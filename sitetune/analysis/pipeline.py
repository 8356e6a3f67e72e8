"""The one analysis pipeline: Volume + task -> segmentation -> measurement -> outputs.

The HTTP routes and the PACS worker call `Pipeline.run`; what they get back, an
`Analysis`, holds the label map on the input grid, the measurement JSON, the NIfTI maps
and the timings, and builds the DICOM outputs by the one policy of
`sitetune.analysis.outputs`. Before any inference the model is checked against the task
(coded labels) and the input against the card's limits (`admission`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np

from sitetune import __version__
from sitetune.analysis.admission import MemoryGate, check_input, estimated_bytes
from sitetune.analysis.outputs import DicomOutputs, build_dicom_outputs
from sitetune.analysis.tasks import (
    MEASURED_LABELS,
    Task,
    check_task,
    measured_task,
    to_measured_labels,
)
from sitetune.errors import InputError, InvalidInput
from sitetune.imaging.volume import Volume
from sitetune.measure.labels import Surfaces, as_label_map
from sitetune.measure.lesions import DEFAULT_MIN_LESION_ML, check_lesion_options, lesion_statistics
from sitetune.models.registry import ModelVersion
from sitetune.models.serving import ModelServer

# the timing key of the measurement stage, per task (as the responses have always named it)
MEASURE_STAGE = {
    Task.WALL_THICKNESS: "thickness",
    Task.LESION_VOLUME: "lesions",
    Task.SEGMENT: "measure",
}


@dataclass(frozen=True)
class ThicknessOptions:
    ed: int | None = None  # phase indices overriding the automatic ED / ES choice
    es: int | None = None
    all_phases: bool = False  # thickness in every labelled phase, not only ED and ES
    surfaces: Surfaces = Surfaces.FITTED


@dataclass(frozen=True)
class LesionOptions:
    min_lesion_ml: float = DEFAULT_MIN_LESION_ML
    connectivity: int = 26

    def checked(self) -> LesionOptions:
        connectivity, min_ml = check_lesion_options(self.connectivity, self.min_lesion_ml)
        return LesionOptions(min_ml, connectivity)


@dataclass
class Analysis:
    """What one run produced. ``labels`` hold the card's label values (the measured
    values for an uploaded mask); ``maps`` are arrays on the input grid by file name."""

    volume: Volume
    labels: np.ndarray
    task: Task
    version: ModelVersion | None
    backend: str | None
    measurement: dict
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)  # what produced it (`provenance`)

    def model_summary(self) -> dict:
        """Which model and backend produced the result (None for a mask upload)."""
        if self.version is None:
            return {"model": None, "backend": None}
        version = self.version
        return {
            "model": {"name": version.name, "version": str(version.version)},
            "backend": self.backend,
        }

    def input_summary(self) -> dict:
        """The grid and where it came from."""
        volume = self.volume
        return {
            "shape": list(volume.array.shape),
            "spacing_mm": [round(s, 6) for s in volume.spacing],
            "phases": volume.n_phases,
            "modality": volume.modality,
            "format": "dicom" if volume.dicom is not None else "nifti",
        }

    def dicom_outputs(self) -> DicomOutputs:
        """SEG(s) and SR by the outputs policy (DICOM input segmented by a model)."""
        if self.version is None:
            reason = "the input was a label map, not an image segmented by a model"
            return DicomOutputs(unavailable={"seg": reason, "sr": reason})
        return build_dicom_outputs(
            self.volume, self.labels, self.version, self.task, self.measurement, self.provenance
        )


def input_digest(volume: Volume) -> str:
    """SHA-256 of the voxels (as loaded: rescaled, in the loader's axis order), the shape
    and the affine: the same image gives the same digest however it was sent."""
    digest = hashlib.sha256()
    digest.update(str(volume.array.shape).encode() + str(volume.array.dtype).encode())
    digest.update(np.ascontiguousarray(volume.affine, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(volume.array).tobytes())
    return digest.hexdigest()


def provenance(volume, task, version, backend, inference, options) -> dict:
    """What produced a result: model version and card digest, engine and backend, every
    setting that changes the output, the code version and the input's digest (the stage
    timings are added by `Pipeline`)."""
    thickness, lesions = options
    settings = {"sw_overlap": inference.overlap, "sw_batch_size": inference.sw_batch_size}
    if task is Task.WALL_THICKNESS:
        settings |= {"surfaces": str(thickness.surfaces), "ed": thickness.ed,
                     "es": thickness.es, "all_phases": thickness.all_phases}  # fmt: skip
    elif task is Task.LESION_VOLUME:
        settings |= {"min_lesion_ml": lesions.min_lesion_ml, "connectivity": lesions.connectivity}
    model = None
    if version is not None:
        model = {"name": version.name, "version": str(version.version),
                 "card_sha256": version.card.digest}  # fmt: skip
    else:
        settings = {k: v for k, v in settings.items() if not k.startswith("sw_")}
    return {
        "model": model,
        "engine": backend.partition(":")[0] if backend else None,
        "backend": backend,
        "task": task.value,
        "settings": settings,
        "code_version": f"sitetune {__version__}",
        "input_sha256": input_digest(volume),
    }


def label_volumes(labels: np.ndarray, volume: Volume, version: ModelVersion) -> dict:
    """Per label name: volume in mL (first phase), and per phase for 4D input."""
    voxel_ml = volume.voxel_volume_ml
    frames = [labels] if labels.ndim == 3 else [labels[..., t] for t in range(labels.shape[3])]
    out = {}
    for value, name in version.card.label_names.items():
        per_phase = [float(np.count_nonzero(frame == value)) * voxel_ml for frame in frames]
        entry = {"volume_ml": round(per_phase[0], 3)}
        if volume.n_phases > 1:
            entry["volume_ml_per_phase"] = [round(v, 3) for v in per_phase]
        out[name] = entry
    return out


class Pipeline:
    """Segment and measure volumes with the models a `ModelServer` serves."""

    def __init__(self, models: ModelServer, gate: MemoryGate | None = None) -> None:
        self.models = models
        self.gate = gate or MemoryGate(1 << 62)  # unbounded unless a deployment sets one

    def choose(
        self, volume: Volume, task: Task, model: str | None, version: str | None
    ) -> ModelVersion:
        """The model version for ``volume`` and ``task``, after the cheap checks: the
        model's coded labels serve the task, the input is within the card's limits."""
        return self._admitted(volume, task, self.models.choose(volume, model, version))

    @staticmethod
    def _admitted(volume: Volume, task: Task, chosen: ModelVersion) -> ModelVersion:
        check_task(chosen.card, task, chosen.ref)
        check_input(volume, chosen.card, chosen.ref)
        return chosen

    def run(
        self,
        volume: Volume,
        task: Task | str | None,
        *,
        model: str | None = None,
        version: str | None = None,
        mask: bool = False,
        thickness: ThicknessOptions = ThicknessOptions(),
        lesions: LesionOptions = LesionOptions(),
        timings_ms: dict[str, float] | None = None,
    ) -> Analysis:
        """Analyse ``volume``: segment it with ``model`` (or the modality's default) at
        ``version`` (default: the ``production`` alias), then measure per ``task`` (None:
        the measurement the model's coded labels support, as the PACS path asks).

        ``mask=True``: ``volume`` is already a label map (the measurement's values).
        ``timings_ms`` (e.g. the load time) is extended with every stage.
        """
        timings = dict(timings_ms or {})
        lesions = lesions.checked()
        options = (thickness, lesions)
        chosen = None
        if task is None:
            if mask:
                raise ValueError("a mask needs its task named")
            chosen = self.models.choose(volume, model, version)
            task = measured_task(chosen.card)
        task = Task(task)
        if task is Task.LESION_VOLUME and volume.n_phases > 1:
            what = "mask" if mask else "image"
            raise InvalidInput(
                f"lesion volume needs a 3D {what}; got {volume.n_phases} phases (4D)",
                code="not_3d",
            )
        if mask:
            if task is Task.SEGMENT:
                raise InputError("a mask cannot be segmented; send an image", code="file_or_mask")
            labels = as_label_map(volume.array, MEASURED_LABELS[task])
            return self._measured(volume, task, labels, labels, None, None, timings, options)
        chosen = (
            self._admitted(volume, task, chosen)
            if chosen
            else self.choose(volume, task, model, version)
        )
        with self.gate.reserve(estimated_bytes(volume, chosen.card), "this analysis"):
            segmentation, backend = self.models.segment(volume, chosen)
            timings.update(segmentation.timings_ms)
            labels = segmentation.labels
            measured = (
                labels if task is Task.SEGMENT else to_measured_labels(labels, chosen.card, task)
            )
            return self._measured(volume, task, labels, measured, chosen, backend, timings, options)

    def _measured(self, volume, task, labels, measured, chosen, backend, timings, options):
        thickness, lesions = options
        started = time.perf_counter()
        measurement, maps = self._measure(
            task, volume, labels, measured, chosen, thickness, lesions
        )
        timings[MEASURE_STAGE[task]] = round(1000 * (time.perf_counter() - started), 1)
        origin = provenance(volume, task, chosen, backend, self.models.config.inference, options)
        origin["timings_ms"] = dict(timings)  # the stages that produced it (load, segment ...)
        return Analysis(volume, labels, task, chosen, backend, measurement, maps, timings, origin)

    @staticmethod
    def _measure(task, volume, labels, measured, chosen, thickness, lesions):
        if task is Task.WALL_THICKNESS:
            from sitetune.measure.ventricle import measure_ventricle  # numba: on first use

            report = measure_ventricle(
                measured,
                volume.affine,
                volume.phases,
                ed=thickness.ed,
                es=thickness.es,
                all_phases=thickness.all_phases,
                surfaces=thickness.surfaces,
            )
            maps = {"thickness.nii.gz": report.thickness_map}
            if report.segment_map is not None:
                maps["segments.nii.gz"] = report.segment_map
            return report.to_json(), maps
        if task is Task.LESION_VOLUME:
            report = lesion_statistics(
                measured == 1,
                volume.native_affine,
                connectivity=lesions.connectivity,
                min_lesion_ml=lesions.min_lesion_ml,
            )
            measurement = report.to_json() | {"centroid_frame": volume.native_frame.value}
            return measurement, {"lesions.nii.gz": report.instances}
        return {"labels": label_volumes(labels, volume, chosen)}, {}
