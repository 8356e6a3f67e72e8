"""Phantom datasets in Medical Segmentation Decathlon layout.

``<out>/dataset.json``, ``<out>/imagesTr/<case>.nii.gz`` (or ``<case>/`` DICOM series
folders) and ``<out>/labelsTr/<case>.nii.gz`` (label maps always NIfTI, on the image's
grid). The dataset is written to a temporary sibling folder and renamed into place at the
end, so an interrupted run leaves nothing that looks like a dataset.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from sitetune.imaging.dicom_write import PhaseLayout, write_dicom_series
from sitetune.imaging.nifti import save_nifti
from sitetune.imaging.phantoms.sites import Family, site_profile
from sitetune.imaging.volume import Volume

logger = logging.getLogger(__name__)

LABEL_NAMES = {
    Family.LV_CT: {"0": "background", "1": "LV blood pool", "2": "LV myocardium"},
    Family.FLAIR_LESION: {"0": "background", "1": "lesion"},
}


class ImageFormat(StrEnum):
    NIFTI = "nifti"
    DICOM = "dicom"


class LabelPhases(StrEnum):
    """Which phases of a 4D cardiac case carry labels; the others are all-zero frames."""

    ALL = "all"
    ED_ES = "ed_es"


@dataclass(frozen=True)
class DatasetSpec:
    """What to generate: ``cases`` phantoms of ``family`` as imaged at ``site``."""

    family: Family
    site: str
    cases: int
    image_format: ImageFormat = ImageFormat.NIFTI
    phases: int = 1
    label_phases: LabelPhases = LabelPhases.ALL
    seed: int = 0
    phase_layout: PhaseLayout = PhaseLayout.SERIES

    def __post_init__(self) -> None:
        object.__setattr__(self, "family", Family(self.family))
        object.__setattr__(self, "image_format", ImageFormat(self.image_format))
        object.__setattr__(self, "label_phases", LabelPhases(self.label_phases))
        object.__setattr__(self, "phase_layout", PhaseLayout(self.phase_layout))
        site_profile(self.family, self.site)  # validates the site name
        if self.cases < 1:
            raise ValueError(f"cases must be >= 1, got {self.cases}")
        if self.phases < 1 or (self.family is Family.FLAIR_LESION and self.phases != 1):
            raise ValueError(
                f"phases must be 1 for flair-lesion and >= 1 for lv-ct, got {self.phases}"
            )


def case_seed(spec: DatasetSpec, index: int) -> int:
    """The subject seed of case ``index``: distinct per dataset seed, site and index."""
    entropy = [spec.seed, index, sum(ord(c) for c in spec.site), len(spec.family)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def generate_case(spec: DatasetSpec, index: int):
    """The phantom of case ``index`` (a `CardiacCase` or `BrainCase`)."""
    from sitetune.imaging.phantoms.brain import brain_phantom
    from sitetune.imaging.phantoms.cardiac import cardiac_phantom

    seed = case_seed(spec, index)
    if spec.family is Family.LV_CT:
        return cardiac_phantom(seed, spec.site, phases=spec.phases)
    return brain_phantom(seed, spec.site)


def _sparse_labels(case, spec: DatasetSpec) -> Volume:
    labels = case.labels
    if spec.label_phases is LabelPhases.ALL or labels.n_phases == 1:
        return labels
    keep = {case.ed_phase, case.es_phase}
    array = labels.array.copy()
    for t in range(labels.n_phases):
        if t not in keep:
            array[..., t] = 0
    return labels.with_array(array)


def write_case(spec: DatasetSpec, index: int, folder: Path) -> dict:
    """Generate and write case ``index`` under ``folder``; return its dataset.json entry."""
    started = time.perf_counter()
    case = generate_case(spec, index)
    name = f"{spec.family.value.replace('-', '')}_{spec.site}_{index:03d}"
    if spec.image_format is ImageFormat.NIFTI:
        image_path = f"imagesTr/{name}.nii.gz"
        image = case.image
        save_nifti(image.array.astype(np.int16), folder / image_path, affine=image.affine)
    else:
        image_path = f"imagesTr/{name}"
        write_dicom_series(
            case.image,
            folder / image_path,
            patient_id=name,
            series_description=f"{spec.family} site {spec.site}",
            phase_layout=spec.phase_layout,
            body_part="HEART" if spec.family is Family.LV_CT else "BRAIN",
        )
    label_path = f"labelsTr/{name}.nii.gz"
    labels = _sparse_labels(case, spec)
    save_nifti(labels.array.astype(np.uint8), folder / label_path, affine=labels.affine)
    truth = dict(case.truth, seconds=round(time.perf_counter() - started, 2))
    return {"image": f"./{image_path}", "label": f"./{label_path}", "truth": truth}


def write_msd_dataset(
    spec: DatasetSpec,
    out: Path | str,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a whole dataset to ``out`` (which must not exist yet); return ``out``.

    Cases are generated in ``workers`` processes (default: all cores). ``progress`` is
    called with ``(done, total)`` after each case.
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new folder")
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "imagesTr").mkdir(parents=True)
    (partial / "labelsTr").mkdir()
    workers = workers or os.cpu_count() or 1
    entries: list[dict | None] = [None] * spec.cases
    try:
        if workers == 1:
            for i in range(spec.cases):
                entries[i] = write_case(spec, i, partial)
                if progress:
                    progress(i + 1, spec.cases)
        else:
            with ProcessPoolExecutor(workers) as pool:
                futures = {pool.submit(write_case, spec, i, partial): i for i in range(spec.cases)}
                for done, future in enumerate(as_completed(futures), start=1):
                    entries[futures[future]] = future.result()
                    if progress:
                        progress(done, spec.cases)
        _write_description(spec, partial, entries)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def _write_description(spec: DatasetSpec, folder: Path, entries: list) -> None:
    profile = site_profile(spec.family, spec.site)
    description = {
        "name": f"sitetune {spec.family} site {spec.site}",
        "description": "Synthetic phantoms generated by sitetune (no patient data)",
        "reference": "sitetune.imaging.phantoms",
        "licence": "CC0-1.0",
        "tensorImageSize": "4D" if spec.phases > 1 else "3D",
        "modality": {"0": "CT" if spec.family is Family.LV_CT else "FLAIR"},
        "labels": LABEL_NAMES[spec.family],
        "numTraining": len(entries),
        "numTest": 0,
        "training": [{"image": e["image"], "label": e["label"]} for e in entries],
        "test": [],
        "sitetune": {
            "family": str(spec.family),
            "site_profile": profile.describe(),
            "image_format": str(spec.image_format),
            "phases": spec.phases,
            "label_phases": str(spec.label_phases),
            "seed": spec.seed,
            "cases": [e["truth"] for e in entries],
        },
    }
    (folder / "dataset.json").write_text(json.dumps(description, indent=2))
