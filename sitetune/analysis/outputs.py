"""The DICOM outputs of an analysis (SEG per measured phase, one TID 1500 SR), by one policy
for the HTTP results and the PACS deliveries.

- wall thickness: a SEG of the ED phase and one of the ES phase (``seg-ed.dcm``,
  ``seg-es.dcm``; ED only for 3D input), in one SEG series; the SR has, per phase, the
  myocardium's volume and wall thickness median / p95 / max and the blood pool's volume;
- lesion volume: ``seg-lesions.dcm``; the SR has the total lesion volume and count;
- segmentation only: ``seg.dcm`` (``seg-phase-<t>.dcm`` per phase of 4D input); the SR
  has each label's volume.

An output that cannot be built is reported in `DicomOutputs.unavailable` with the reason
and never stops the others: without a Frame of Reference there is no SEG, and the SR
then carries its numbers without region references (TID 1501 groups).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from sitetune.analysis.tasks import Task
from sitetune.imaging.codes import AHA_SEGMENT_CODES, LESION, LV_BLOOD_POOL, LV_MYOCARDIUM
from sitetune.imaging.seg import seg_unavailable_reason, segment_numbers, segmentation_from_labels
from sitetune.imaging.sr import MeasurementGroup, measurement_report
from sitetune.imaging.volume import Volume
from sitetune.models.registry import ModelVersion

logger = logging.getLogger(__name__)

# Procedure reported: codes of CID 100 "Quantitative Diagnostic Imaging Procedures", which
# the SR validators check the row against (SNOMED's "CT of heart" is not in it); the
# anatomy is in each measurement group's finding site.
PROCEDURES = {
    "CT": Code("25045-6", "LN", "CT unspecified body region"),
    "MR": Code("25056-3", "LN", "MRI unspecified body region"),
}
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")
SR_NAME = "report-sr.dcm"


@dataclass(frozen=True)
class SegPhase:
    """One SEG to write: the file name, the phase index and its role (ED / ES / None)."""

    name: str
    phase: int
    role: str | None


@dataclass
class DicomOutputs:
    """Built objects by file name, and the outputs that could not be built, with why."""

    files: dict[str, Dataset] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # file name -> "seg" | "sr"
    phases: dict[str, str] = field(default_factory=dict)  # SEG file name -> "ed"/"es"/"<t>"
    unavailable: dict[str, str] = field(default_factory=dict)  # "seg" | "sr" -> reason


def seg_phases(task: Task, n_phases: int, measurement: dict) -> list[SegPhase]:
    """Which phases get a SEG, by the policy above."""
    if task is Task.WALL_THICKNESS:
        roles = [("ED", 0)] if n_phases == 1 else []
        if n_phases > 1:
            for role in ("ED", "ES"):
                entry = measurement.get(role.lower())
                if entry is not None:
                    roles.append((role, entry["index"]))
        return [SegPhase(f"seg-{r.lower()}.dcm", t, r) for r, t in roles]
    if task is Task.LESION_VOLUME:
        return [SegPhase("seg-lesions.dcm", 0, None)]
    if n_phases == 1:
        return [SegPhase("seg.dcm", 0, None)]
    return [SegPhase(f"seg-phase-{t}.dcm", t, None) for t in range(n_phases)]


def procedure_of(version: ModelVersion) -> Code:
    """The procedure an SR reports, from the modality the model reads."""
    return PROCEDURES.get(version.card.modality, IMAGING_PROCEDURE)


def _frame(labels: np.ndarray, t: int) -> np.ndarray:
    return labels if labels.ndim == 3 else labels[..., t]


def build_dicom_outputs(
    source: Volume,
    labels: np.ndarray,
    version: ModelVersion,
    task: Task,
    measurement: dict,
    provenance: dict | None = None,
) -> DicomOutputs:
    """SEG(s) and SR for an analysis of DICOM ``source`` whose label map (the card's
    values, on the source grid) is ``labels`` and whose measurement JSON is
    ``measurement`` (as `Analysis.measurement`)."""
    out = DicomOutputs()
    lines = provenance_lines(provenance or {})
    if source.dicom is None:
        reason = "the input was not DICOM (SEG and SR reference DICOM source images)"
        return DicomOutputs(unavailable={"seg": reason, "sr": reason})
    plan = seg_phases(task, source.n_phases, measurement)
    segs: dict[int, Dataset] = {}
    reason = seg_unavailable_reason(source.phase(0))
    if reason is None:
        series_uid = generate_uid()
        structures = {label.value: label.code for label in version.card.labels}
        for number, item in enumerate(plan, start=1):
            try:
                seg = segmentation_from_labels(
                    _frame(labels, item.phase),
                    source.phase(item.phase),
                    structures,
                    algorithm_name=version.name,
                    algorithm_version=str(version.version),
                    series_instance_uid=series_uid,
                    instance_number=number,
                    series_description=_seg_description(version, task, item),
                    provenance=lines,
                )
            except Exception as exc:  # an output that cannot be built never fails the others
                logger.warning("SEG %s could not be built: %s", item.name, exc, exc_info=True)
                reason = f"the SEG could not be built ({type(exc).__name__}: {exc})"
                segs.clear()
                break
            segs[item.phase] = seg
            out.files[item.name] = seg
            out.kinds[item.name] = "seg"
            out.phases[item.name] = (item.role or str(item.phase)).lower()
    if reason is not None:
        out.unavailable["seg"] = reason
        for name in [n for n, k in out.kinds.items() if k == "seg"]:
            del out.files[name], out.kinds[name], out.phases[name]
    try:
        groups = _groups(task, source, labels, version, measurement, plan, segs)
        sources = [ds for t in range(source.n_phases) for ds in source.dicom.phase_datasets(t)]
        sr = measurement_report(
            sources,
            groups,
            algorithm_name=version.name,
            algorithm_version=str(version.version),
            procedure=procedure_of(version),
            provenance=lines,
        )
    except Exception as exc:
        logger.warning("SR could not be built: %s", exc, exc_info=True)
        out.unavailable["sr"] = f"the SR could not be built ({type(exc).__name__}: {exc})"
    else:
        out.files[SR_NAME] = sr
        out.kinds[SR_NAME] = "sr"
    return out


def _segment_thickness(measurement: dict, item) -> list:
    """(CID 3717 code, {mean, median, max}) of each AHA segment measured at this phase."""
    role = (item.role or "ED").lower()  # a 3D input's one frame counts as ED
    out = []
    for segment in measurement.get("segments") or []:
        stats = segment.get(role)
        if stats:
            values = {k: stats[k] for k in ("mean", "median", "max")}
            out.append((AHA_SEGMENT_CODES[segment["id"]], values))
    return out


def provenance_lines(provenance: dict) -> list[str]:
    """The provenance as Software Versions values (LO: at most 64 characters each; 62
    here, as a padded odd total length must not push the last one over)."""
    model = provenance.get("model") or {}
    lines = []
    if model.get("card_sha256"):
        lines.append(f"card sha256 {model['card_sha256'][:40]}")
    if provenance.get("backend"):
        lines.append(str(provenance["backend"])[:62])
    if provenance.get("input_sha256"):
        lines.append(f"input sha256 {provenance['input_sha256'][:40]}")
    settings = provenance.get("settings") or {}
    if settings:
        lines.append(" ".join(f"{k}={v}" for k, v in sorted(settings.items()))[:62])
    return lines


def _seg_description(version: ModelVersion, task: Task, item: SegPhase) -> str:
    what = {Task.WALL_THICKNESS: "LV", Task.LESION_VOLUME: "lesions"}.get(task, "labels")
    where = f" {item.role}" if item.role else ""
    return f"{version.name} {version.version} {what}{where}"


def _groups(task, source, labels, version, measurement, plan, segs) -> list[MeasurementGroup]:
    structures = {label.value: label for label in version.card.labels}
    number = segment_numbers(structures)
    by_code = {label.code.type.value: label.value for label in version.card.labels}
    groups = []
    if task is Task.WALL_THICKNESS:
        myo, pool = by_code[LV_MYOCARDIUM.type.value], by_code[LV_BLOOD_POOL.type.value]
        for item in plan:
            entry = measurement["phases"][item.phase]
            frame = _frame(labels, item.phase)
            phase_name = "end-diastole" if item.role == "ED" else "end-systole"
            seg = segs.get(item.phase)
            groups.append(MeasurementGroup(
                f"LV myocardium, {phase_name} (phase {item.phase})", seg, number[myo],
                structures[myo].code, volume_ml=entry["volumes_ml"]["myocardium"],
                thickness_mm=entry["thickness_mm"], phase=item.role,
                has_region=bool((frame == myo).any()),
            ))  # fmt: skip
            groups.append(MeasurementGroup(
                f"LV blood pool, {phase_name} (phase {item.phase})", seg, number[pool],
                structures[pool].code, volume_ml=entry["volumes_ml"]["blood_pool"],
                phase=item.role, has_region=bool((frame == pool).any()),
            ))  # fmt: skip
            for code, stats in _segment_thickness(measurement, item):
                groups.append(MeasurementGroup(  # the myocardium's region, at this site
                    f"{code.meaning}, {phase_name} (phase {item.phase})", seg, number[myo],
                    structures[myo].code, thickness_mm=stats, phase=item.role,
                    has_region=bool((frame == myo).any()), wall_segment=code,
                ))  # fmt: skip
        return groups
    if task is Task.LESION_VOLUME:
        value = by_code[LESION.type.value]
        groups.append(MeasurementGroup(
            "White matter lesions", segs.get(0), number[value], structures[value].code,
            volume_ml=round(measurement["total_ml"], 4), lesion_count=measurement["count"],
            has_region=bool((labels == value).any()),
        ))  # fmt: skip
        return groups
    for item in plan:
        frame = _frame(labels, item.phase)
        for value, label in structures.items():
            entry = measurement["labels"][label.name]
            per_phase = entry.get("volume_ml_per_phase", [entry["volume_ml"]])
            where = f", phase {item.phase}" if source.n_phases > 1 else ""
            groups.append(MeasurementGroup(
                f"{label.name}{where}", segs.get(item.phase), number[value], label.code,
                volume_ml=per_phase[item.phase], has_region=bool((frame == value).any()),
            ))  # fmt: skip
    return groups
