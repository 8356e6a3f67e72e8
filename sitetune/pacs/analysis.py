"""One received series (or study) -> segmentation, measurement, DICOM SEG(s) and a TID 1500
SR, written to an output folder.

- A model with LV myocardium and blood pool labels: wall thickness at ED and ES
  (`measure_ventricle`); one SEG per measured phase (ED, ES; the first phase of a 3D
  series) in one SEG series, and an SR with, per phase, the myocardium's volume and
  wall thickness median / p95 / max and the blood pool's volume.
- A model with a lesion label: lesion count and total volume (`lesion_statistics`, the
  service's defaults); one SEG and an SR group with total lesion volume and count.

The SR references every SEG and the source series, and shares their study.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from sitetune.errors import InvalidInput
from sitetune.imaging.dicom import load_dicom
from sitetune.imaging.seg import segment_numbers, segmentation_from_labels
from sitetune.imaging.sr import MeasurementGroup, measurement_report
from sitetune.imaging.volume import Volume
from sitetune.measure.lesions import LESION_LABELS, lesion_statistics
from sitetune.measure.ventricle import BLOOD_POOL, LV_LABELS, MYOCARDIUM, measure_ventricle
from sitetune.models.registry import ModelVersion
from sitetune.models.serving import ModelServer
from sitetune.results import input_summary, model_summary

CT_OF_HEART = Code("241547009", "SCT", "CT of heart")
MR_OF_BRAIN = Code("816077007", "SCT", "MRI of brain")


@dataclass
class AnalysisOutput:
    summary: dict  # model, measurements, timings
    files: list[dict]  # {kind: "seg"|"sr", name, path, sop_instance_uid}


def _labels_of(version: ModelVersion) -> set[int]:
    return {label.value for label in version.card.labels}


def analyse(files: list[Path], models: ModelServer, model: str, folder: Path) -> AnalysisOutput:
    """Segment and measure the instances in ``files`` with ``model``'s production version;
    write the SEG(s) and SR under ``folder``."""
    started = time.perf_counter()
    datasets = [pydicom.dcmread(path) for path in files]
    volume = load_dicom(datasets)
    timings = {"load": round(1000 * (time.perf_counter() - started), 1)}
    chosen = models.choose(volume, model, None)
    segmentation, backend = models.segment(volume, chosen)
    timings.update(segmentation.timings_ms)
    labels = segmentation.labels
    folder.mkdir(parents=True, exist_ok=True)
    measuring = time.perf_counter()
    if set(LV_LABELS) <= _labels_of(chosen):
        measurement, groups, segs = _ventricle(volume, labels, chosen)
        procedure = CT_OF_HEART
    elif set(LESION_LABELS) <= _labels_of(chosen):
        measurement, groups, segs = _lesions(volume, labels, chosen)
        procedure = MR_OF_BRAIN
    else:
        raise InvalidInput(
            f"model {chosen.ref} has neither LV nor lesion labels: nothing to measure",
            code="nothing_to_measure",
        )
    timings["measure"] = round(1000 * (time.perf_counter() - measuring), 1)
    sources = [ds for t in range(volume.n_phases) for ds in volume.dicom.phase_datasets(t)]
    sr = measurement_report(
        sources,
        groups,
        algorithm_name=chosen.name,
        algorithm_version=str(chosen.version),
        procedure=procedure,
    )
    written = []
    for name, dataset, kind in [*((n, s, "seg") for n, s in segs), ("report-sr.dcm", sr, "sr")]:
        path = folder / name
        dataset.save_as(path)
        written.append(
            {"kind": kind, "name": name, "path": str(path),
             "sop_instance_uid": str(dataset.SOPInstanceUID)}
        )  # fmt: skip
    timings["total"] = round(1000 * (time.perf_counter() - started), 1)
    summary = {
        **model_summary(chosen, backend),
        "input": input_summary(volume),
        **measurement,
        "timings_ms": timings,
    }
    return AnalysisOutput(summary, written)


def _seg(labels: np.ndarray, source: Volume, version: ModelVersion, series_uid: str, number: int,
         description: str):  # fmt: skip
    structures = {label.value: label.code for label in version.card.labels}
    return segmentation_from_labels(
        labels,
        source,
        structures,
        algorithm_name=version.name,
        algorithm_version=str(version.version),
        series_instance_uid=series_uid,
        instance_number=number,
        series_description=description,
    )


def _ventricle(volume: Volume, labels: np.ndarray, version: ModelVersion):
    report = measure_ventricle(labels, volume.affine, volume.phases)
    measured = report.to_json()
    structures = {label.value: label for label in version.card.labels}
    segment = segment_numbers(structures)
    series_uid = generate_uid()
    segs, groups = [], []
    roles = [("ED", report.choice.ed), ("ES", report.choice.es)]
    if volume.n_phases == 1:
        roles = [("ED", 0)]
    for number, (role, t) in enumerate((r for r in roles if r[1] is not None), start=1):
        frame = labels if labels.ndim == 3 else labels[..., t]
        seg = _seg(frame, volume.phase(t), version, series_uid, number,
                   f"{version.name} {version.version} LV")  # fmt: skip
        segs.append((f"seg-{role.lower()}.dcm", seg))
        entry = report.phases[t]
        volumes = entry["volumes_ml"]
        phase_name = "end-diastole" if role == "ED" else "end-systole"
        groups.append(MeasurementGroup(
            f"LV myocardium, {phase_name} (phase {t})", seg, segment[MYOCARDIUM],
            structures[MYOCARDIUM].code, volume_ml=volumes["myocardium"],
            thickness_mm=entry["thickness_mm"], phase=role,
            has_region=bool((frame == MYOCARDIUM).any()),
        ))  # fmt: skip
        groups.append(MeasurementGroup(
            f"LV blood pool, {phase_name} (phase {t})", seg, segment[BLOOD_POOL],
            structures[BLOOD_POOL].code, volume_ml=volumes["blood_pool"], phase=role,
            has_region=bool((frame == BLOOD_POOL).any()),
        ))  # fmt: skip
    return {"thickness": measured}, groups, segs


def _lesions(volume: Volume, labels: np.ndarray, version: ModelVersion):
    if volume.n_phases > 1:
        raise InvalidInput("lesion volume needs a 3D series; got 4D", code="not_3d")
    report = lesion_statistics(labels == 1, volume.native_affine)
    structures = {label.value: label for label in version.card.labels}
    seg = _seg(labels, volume.phase(0), version, generate_uid(), 1,
               f"{version.name} {version.version} lesions")  # fmt: skip
    group = MeasurementGroup(
        "White matter lesions", seg, segment_numbers(structures)[1], structures[1].code,
        volume_ml=round(report.total_ml, 4), lesion_count=report.count,
        has_region=bool((labels == 1).any()),
    )  # fmt: skip
    lesions = report.to_json() | {"centroid_frame": volume.native_frame.value}
    return {"lesions": lesions}, [group], [("seg-lesions.dcm", seg)]
