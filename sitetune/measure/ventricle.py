"""Left-ventricle report over cardiac phases: ED/ES choice, volumes, wall thickness.

ED and ES are chosen, in order of precedence:

1. explicitly by the caller (phase indices);
2. from the DICOM cardiac-phase tags: end-diastole is the frame acquired at the R wave
   (Nominal Percentage of Cardiac Phase within 10 % of 0/100 %, or a trigger time of at
   most 100 ms). DICOM image headers carry no end-systole marker, and the systolic
   percentage varies with heart rate, so ES is not taken from tags;
3. from the blood-pool volume curve over the labelled phases: ED the largest, ES the
   smallest. Phases whose label frame is empty are unlabelled and never chosen.

Each phase entry reports blood-pool and myocardium volumes; wall thickness is computed
at ED and ES (every labelled phase with ``all_phases``), after each frame is cleaned
(`sitetune.measure.cleanup`); its maximum is robust (`MAX_DEFINITION`: a percentile, not
the single highest voxel, which is reported as ``peak``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sitetune.errors import InvalidInput
from sitetune.imaging.volume import PhaseInfo, spacing_from_affine, voxel_volume_ml
from sitetune.measure.cleanup import clean_lv
from sitetune.measure.labels import BLOOD_POOL, LV_LABELS, MYOCARDIUM, Surfaces
from sitetune.measure.segments import assign_segments, lv_axis, segment_statistics
from sitetune.measure.thickness import ThicknessResult, wall_thickness

__all__ = ["BLOOD_POOL", "LV_LABELS", "MYOCARDIUM", "measure_ventricle"]
ED_TOLERANCE_PCT, ED_MAX_TRIGGER_MS = 10.0, 100.0
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhaseChoice:
    ed: int | None
    es: int | None
    ed_source: str | None
    es_source: str | None


@dataclass
class VentricleReport:
    """Per-phase measurements, the ED/ES choice, the thickness map (mm, float32), and the
    AHA segments: per measured phase the statistics, the segment map (uint8, 1..17 on the
    measured myocardium), the long axis they were cut along."""

    phases: list[dict]
    choice: PhaseChoice
    thickness_map: np.ndarray
    method: dict
    segment_map: np.ndarray | None = None
    segment_stats: dict[int, list[dict]] = field(default_factory=dict)
    axis: dict | None = None

    def segments_json(self) -> list[dict] | None:
        """``segments`` of the response (API.md): per AHA segment the ED and ES mean,
        median and (robust) max, and the thickening of the medians (a 3D input: its one
        frame as ED)."""
        if not self.segment_stats:
            return None
        measured = sorted(self.segment_stats)
        ed = self.choice.ed if self.choice.ed in self.segment_stats else measured[0]
        es = self.choice.es if self.choice.es in self.segment_stats else None
        out = []
        for k, entry in enumerate(self.segment_stats[ed]):
            item = {"id": entry["id"], "name": entry["name"]}
            for role, t in (("ed", ed), ("es", es)):
                stats = self.segment_stats[t][k] if t is not None else None
                item[role] = (
                    {key: stats[key] for key in ("mean", "median", "max", "voxels")}
                    if stats and stats["median"] is not None
                    else None
                )
            before = item["ed"]["median"] if item["ed"] else None
            after = item["es"]["median"] if item["es"] else None
            item["thickening_pct"] = (
                round(100.0 * (after - before) / before, 2) if before and after is not None
                else None
            )  # fmt: skip
            out.append(item)
        return out

    def to_json(self) -> dict:
        """The measurement part of the ``POST /v1/thickness`` response (API.md)."""
        ed = self.phases[self.choice.ed] if self.choice.ed is not None else None
        es = self.phases[self.choice.es] if self.choice.es is not None else None
        thickening = None
        if ed and es and ed["thickness_mm"] and es["thickness_mm"]:
            before, after = ed["thickness_mm"]["median"], es["thickness_mm"]["median"]
            thickening = round(100.0 * (after - before) / before, 2) if before > 0 else None
        return {
            "phases": self.phases,
            "ed": ed,
            "es": es,
            "thickening_pct": thickening,
            "segments": self.segments_json(),
            "axis": self.axis,
            "method": self.method
            | {"ed_source": self.choice.ed_source, "es_source": self.choice.es_source},
        }


def choose_phases(
    phases: Sequence[PhaseInfo],
    blood_pool_ml: Sequence[float],
    labelled: Sequence[bool],
    *,
    ed: int | None = None,
    es: int | None = None,
) -> PhaseChoice:
    """ED and ES phase indices and where each choice came from (see the module doc)."""
    n = len(phases)
    for name, value in (("ed", ed), ("es", es)):
        if value is not None and not 0 <= value < n:
            raise InvalidInput(
                f"{name}={value} is not a phase of this input (0..{n - 1})", code="bad_phase"
            )
    if n == 1:
        return PhaseChoice(
            ed, es, "request" if ed is not None else None, "request" if es is not None else None
        )
    candidates = [t for t in range(n) if labelled[t]]
    ed_source = es_source = "request"
    if ed is None:
        ed, ed_source = _ed_from_tags(phases, candidates)
    if ed is None and candidates:
        ed, ed_source = max(candidates, key=lambda t: blood_pool_ml[t]), "blood_pool_volume_max"
    if es is None:
        rest = [t for t in candidates if t != ed]
        if rest:
            es, es_source = min(rest, key=lambda t: blood_pool_ml[t]), "blood_pool_volume_min"
        else:
            es_source = None
    for name, value in (("ED", ed), ("ES", es)):
        if value is not None and not labelled[value]:
            raise InvalidInput(
                f"the {name} phase {value} has no blood pool in its label map", code="bad_phase"
            )
    return PhaseChoice(ed, es, ed_source if ed is not None else None, es_source)


def _ed_from_tags(phases: Sequence[PhaseInfo], candidates: list[int]) -> tuple[int | None, str]:
    percentages = [p.nominal_percentage for p in phases]
    if candidates and all(v is not None for v in percentages):
        distance = {t: min(percentages[t] % 100, 100 - percentages[t] % 100) for t in candidates}
        best = min(candidates, key=distance.get)
        if distance[best] <= ED_TOLERANCE_PCT:
            return best, "dicom:nominal_percentage_of_cardiac_phase"
        return None, ""
    triggers = [p.trigger_time_ms for p in phases]
    if candidates and all(v is not None for v in triggers):
        best = min(candidates, key=lambda t: triggers[t])
        if triggers[best] <= ED_MAX_TRIGGER_MS:
            return best, "dicom:trigger_time"
    return None, ""


def measure_ventricle(
    labels: np.ndarray,
    affine: np.ndarray,
    phases: Sequence[PhaseInfo] | None = None,
    *,
    ed: int | None = None,
    es: int | None = None,
    all_phases: bool = False,
    surfaces: Surfaces | str = Surfaces.FITTED,
    clean: bool = True,
) -> VentricleReport:
    """Volumes per phase, ED/ES, and wall thickness on a 3D or 4D LV label map
    (``surfaces``: the placement of `wall_thickness`). With ``clean`` (the default) each
    frame is cleaned first (`clean_lv`: myocardium blobs in the cavity, fragments, stray
    blood pool, holes) and what changed is reported in ``method["cleanup"]``; volumes and
    thickness are those of the cleaned frames.

    Raises:
        InvalidInput: a phase to measure has no myocardium or no blood pool, or a
            requested ED/ES index is out of range.
    """
    frames = [labels] if labels.ndim == 3 else [labels[..., t] for t in range(labels.shape[3])]
    phases = list(phases) if phases is not None else [PhaseInfo(t) for t in range(len(frames))]
    voxel_ml = voxel_volume_ml(affine)
    cleaned = [clean_lv(f, voxel_ml) for f in frames] if clean else [(f, None) for f in frames]
    frames = [f for f, _ in cleaned]
    spacing = spacing_from_affine(affine)
    counts = [np.bincount(f.ravel(), minlength=3)[1:3] for f in frames]
    volumes = [
        {
            "blood_pool": round(float(c[0]) * voxel_ml, 3),
            "myocardium": round(float(c[1]) * voxel_ml, 3),
        }
        for c in counts
    ]
    labelled = [bool(c[0]) for c in counts]
    choice = choose_phases(phases, [v["blood_pool"] for v in volumes], labelled, ed=ed, es=es)
    if len(frames) == 1:
        to_measure = [0]
    elif all_phases:
        to_measure = [t for t in range(len(frames)) if labelled[t]]
    else:
        to_measure = sorted({t for t in (choice.ed, choice.es) if t is not None})
    thickness_map = np.zeros(labels.shape, dtype=np.float32)
    results: dict[int, ThicknessResult] = {}
    for t in to_measure:
        try:
            results[t] = wall_thickness(
                frames[t], spacing, inner=BLOOD_POOL, wall=MYOCARDIUM, surfaces=surfaces
            )
        except InvalidInput as error:
            where = f"phase {t}: " if len(frames) > 1 else ""
            raise InvalidInput(f"{where}{error.message}", code=error.code) from error
        if labels.ndim == 3:
            thickness_map[...] = results[t].thickness_mm
        else:
            thickness_map[..., t] = results[t].thickness_mm
    entries = []
    for t in range(len(frames)):
        role = "ED" if t == choice.ed else "ES" if t == choice.es else None
        stats = results[t].stats if t in results else None
        entries.append(
            {
                "index": t,
                "role": role,
                "thickness_mm": {k: round(v, 3) for k, v in stats.items()} if stats else None,
                "volumes_ml": volumes[t],
            }
        )
    method = dict(next(iter(results.values())).method) if results else {}
    method["seconds"] = round(sum(r.method["seconds"] for r in results.values()), 3)
    method["stage_seconds"] = {
        stage: round(sum(r.method["stage_seconds"][stage] for r in results.values()), 3)
        for stage in method.get("stage_seconds", {})
    }
    method["spacing_mm"] = [round(s, 6) for s in spacing]
    segment_map, segment_stats, axis = _segments(frames, affine, results, choice, labels.shape)
    if clean:
        method["cleanup"] = {
            "rule": "myocardium not joining cavity to outside, stray blood pool and holes "
            "corrected before measuring (sitetune.measure.cleanup)",
            "phases": {str(t): cleaned[t][1] for t in to_measure},
        }
    return VentricleReport(entries, choice, thickness_map, method, segment_map, segment_stats, axis)


def _segments(frames, affine, results, choice, shape):
    """AHA segments of every measured phase along one long axis (the ED frame's, else the
    first measured): the segment map, the statistics per phase, the axis as JSON. A frame
    whose axis cannot be found gives no segments, and the axis says why."""
    if not results:
        return None, {}, None
    reference = choice.ed if choice.ed in results else min(results)
    try:
        axis = lv_axis(frames[reference], affine)
        segment_map = np.zeros(shape, dtype=np.uint8)
        stats = {}
        for t, result in results.items():
            segments = assign_segments(frames[t], affine, axis)
            if len(shape) == 3:
                segment_map[...] = segments
            else:
                segment_map[..., t] = segments
            thickness = np.where(result.thickness_mm > 0, result.thickness_mm, np.nan)
            stats[t] = segment_statistics(thickness, segments)
    except Exception as error:  # the segments never cost the global measurement
        message = error.message if isinstance(error, InvalidInput) else str(error)
        logger.warning("no AHA segments: %s", message, exc_info=not isinstance(error, ValueError))
        return None, {}, {"error": f"no AHA segments: {message}"}
    shown = {
        key: [round(float(v), 2 if key in ("apex", "cavity_apex", "base") else 4) for v in value]
        if isinstance(value, list) else value
        for key, value in axis.to_json().items()
    }  # fmt: skip
    return segment_map, stats, shown | {"from_phase": reference}


AGREEMENT_STATS = ("median", "p95", "max")


def thickness_agreement(
    predicted: Sequence[VentricleReport], reference: Sequence[VentricleReport]
) -> dict:
    """Agreement of thickness statistics between paired reports (one pair per case).

    For each of median, p95 and max at ED and at ES: Pearson r, mean difference (bias,
    predicted minus reference) and mean absolute difference in mm; plus how often the
    predicted ED/ES phases were the reference's. The fine-tune evaluation reuses this.
    """
    from scipy.stats import pearsonr

    if len(predicted) != len(reference) or not predicted:
        raise ValueError("need one predicted report per reference report, at least one")
    out: dict = {"cases": len(predicted)}
    for role in ("ed", "es"):
        pairs = [
            (p.to_json()[role], r.to_json()[role])
            for p, r in zip(predicted, reference, strict=True)
        ]
        measured = [(p, r) for p, r in pairs if _measured(p) and _measured(r)]
        for stat in AGREEMENT_STATS:
            x = np.array([p["thickness_mm"][stat] for p, _ in measured], float)
            y = np.array([r["thickness_mm"][stat] for _, r in measured], float)
            constant = x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0
            out[f"{role}_{stat}"] = {
                "pearson_r": None if constant else round(float(pearsonr(x, y)[0]), 4),
                "bias_mm": round(float((x - y).mean()), 3) if x.size else None,
                "mean_abs_diff_mm": round(float(np.abs(x - y).mean()), 3) if x.size else None,
                "cases": int(x.size),
            }
        out[f"{role}_phase_correct"] = round(
            float(np.mean([(p or {}).get("index") == (r or {}).get("index") for p, r in pairs])), 3
        )
    return out


def _measured(entry: dict | None) -> bool:
    return bool(entry and entry.get("thickness_mm"))
