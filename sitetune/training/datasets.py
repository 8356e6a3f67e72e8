"""Site datasets for fine-tuning: a zip in Medical Segmentation Decathlon layout.

```
dataset.json        {"modality" | "channel_names": {"0": "CT"}, "labels": {...},
                     "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}]}
imagesTr/           NIfTI images (``a.nii.gz`` or nnU-Net's ``a_0000.nii.gz``), or one DICOM
                    series folder per case
labelsTr/           NIfTI label maps on the image grids
```

Everything is checked against the base model's card before any training, and every
problem found is reported (per case), not only the first: label values, integer labels,
image/label shape and geometry agreement, modality, channel count, file paths that would
leave the dataset. 4D (cardiac) labels may leave frames all-zero: those frames are
"unlabelled" and skipped, so ED/ES-only labelling works; a 4D case with no labelled frame
is a problem. A 3D label map is always a label, even when empty (a case without lesions).
Extraction is `sitetune.imaging.archive.extract_zip` (no path traversal,
limits on size, member count and compression ratio).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sitetune.errors import InvalidInput, SitetuneError
from sitetune.imaging.archive import ZipLimits, extract_zip
from sitetune.imaging.load import load_volume
from sitetune.imaging.volume import Volume
from sitetune.models.card import ModelCard

MIN_CASES = 2  # at least one to train on and one held out
_GEOMETRY_TOLERANCE_MM = 1e-3
_NIFTI_SUFFIXES = (".nii.gz", ".nii")
# Channel names that mean an MR contrast (MSD and nnU-Net name MR channels by contrast).
_MR_NAMES = {"MR", "MRI", "FLAIR", "T1", "T1W", "T1GD", "T1CE", "T2", "T2W", "ADC", "DWI", "PD"}


@dataclass(frozen=True)
class DatasetProblem:
    """One thing wrong with an uploaded dataset (``case`` None: the dataset as a whole)."""

    code: str
    message: str
    case: str | None = None

    def to_json(self) -> dict:
        return {"case": self.case, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class SiteCase:
    """One labelled case: image and label paths, and the frames that carry labels."""

    name: str
    image: Path
    label: Path
    labelled_phases: tuple[int, ...]  # (0,) for 3D; indices of the non-empty 4D frames


@dataclass(frozen=True)
class SiteDataset:
    """A validated site dataset, extracted under ``root``."""

    root: Path
    cases: list[SiteCase]
    fingerprint: str  # sha256 over every case file's relative path and bytes
    description: dict = field(default_factory=dict)  # dataset.json

    def case(self, name: str) -> SiteCase:
        for case in self.cases:
            if case.name == name:
                return case
        raise KeyError(f"no case {name!r}; cases: {[c.name for c in self.cases]}")


def case_refs(dataset: SiteDataset) -> dict[str, str]:
    """Case name -> ``case-001``... in sorted name order: what logs, job results and model
    cards say instead of case names, which are often MRNs or accession numbers (PHI).
    The site maps them back by sorting its own case names."""
    return {
        name: f"case-{i:03d}" for i, name in enumerate(sorted(c.name for c in dataset.cases), 1)
    }


class InvalidDataset(InvalidInput):
    """A site dataset with problems; ``details["problems"]`` lists every one."""

    default_code = "invalid_dataset"

    def __init__(self, problems: list[DatasetProblem]) -> None:
        per_case = {p.case for p in problems if p.case is not None}
        summary = "; ".join(
            f"{p.case + ': ' if p.case else ''}{p.message}" for p in problems[:5]
        ) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        super().__init__(
            f"the dataset has {len(problems)} problem(s) in {len(per_case)} case(s): {summary}",
            details={"problems": [p.to_json() for p in problems]},
        )
        self.problems = problems


def open_site_dataset(
    archive: Path, destination: Path, card: ModelCard, limits: ZipLimits | None = None
) -> SiteDataset:
    """Extract ``archive`` to ``destination`` (must not exist) and validate it for ``card``.

    On any problem the extracted files are removed and `InvalidDataset` (422, every
    problem listed), `UnsafeArchive` (400) or `PayloadTooLarge` (413) is raised.
    """
    extract_zip(archive, destination, limits)
    try:
        return validate_site_dataset(dataset_root(destination), card)
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise


def dataset_root(folder: Path) -> Path:
    """The folder holding ``dataset.json``: the top, or a single folder inside it (zips
    made by compressing the dataset folder itself)."""
    if (folder / "dataset.json").is_file():
        return folder
    children = [p for p in folder.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / "dataset.json").is_file():
        return children[0]
    return folder


def validate_site_dataset(root: Path, card: ModelCard) -> SiteDataset:
    """Check an extracted dataset against ``card``; `InvalidDataset` lists every problem."""
    root = Path(root).resolve()
    problems: list[DatasetProblem] = []
    description = _read_description(root, problems)
    _check_description(description, card, problems)
    pairs = _case_pairs(root, description, problems)
    cases = []
    for name, image_path, label_path in pairs:
        case_problems: list[DatasetProblem] = []
        case = _check_case(name, image_path, label_path, card, case_problems)
        problems.extend(case_problems)
        if case is not None and not case_problems:
            cases.append(case)
    if len(pairs) < MIN_CASES:
        problems.append(
            DatasetProblem(
                "too_few_cases",
                f"the dataset has {len(pairs)} case(s); at least {MIN_CASES} are needed "
                "(cases to train on and cases held out to compare with production)",
            )
        )
    if problems:
        raise InvalidDataset(problems)
    return SiteDataset(root, cases, _fingerprint(root, cases), description)


def _read_description(root: Path, problems: list[DatasetProblem]) -> dict:
    path = root / "dataset.json"
    if not path.is_file():
        problems.append(
            DatasetProblem(
                "missing_dataset_json",
                "no dataset.json at the top of the zip (Medical Segmentation Decathlon layout)",
            )
        )
        return {}
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(DatasetProblem("bad_dataset_json", f"dataset.json is not JSON ({exc})"))
        return {}
    if not isinstance(description, dict):
        problems.append(DatasetProblem("bad_dataset_json", "dataset.json must be a JSON object"))
        return {}
    return description


def _check_description(description: dict, card: ModelCard, problems: list) -> None:
    """Modality, channel count and label names of dataset.json against the card."""
    channels = description.get("channel_names", description.get("modality"))
    if isinstance(channels, dict) and channels:
        if len(channels) != 1:
            problems.append(
                DatasetProblem(
                    "channel_count",
                    f"dataset.json lists {len(channels)} channels {sorted(channels.values())}; "
                    f"model {card.name} takes one {card.modality} image",
                )
            )
        for name in channels.values():
            if _modality_of(str(name)) != card.modality:
                problems.append(
                    DatasetProblem(
                        "modality_mismatch",
                        f"dataset.json says the images are {name!r}; model {card.name} "
                        f"needs {card.modality}",
                    )
                )
    labels = description.get("labels")
    if isinstance(labels, dict):
        allowed = {0, *card.label_names}
        values = []
        for key, value in labels.items():  # MSD: {"1": "name"}; nnU-Net v2: {"name": 1}
            number = key if str(key).lstrip("-").isdigit() else value
            try:
                values.append(int(number))
            except (TypeError, ValueError):
                problems.append(
                    DatasetProblem("bad_labels", f"dataset.json label entry {key!r}: {value!r}")
                )
        unknown = sorted(set(values) - allowed)
        if unknown:
            problems.append(
                DatasetProblem(
                    "label_mismatch",
                    f"dataset.json declares label values {unknown} that model {card.name} "
                    f"does not have; its labels: {_describe(card)}",
                )
            )


def _modality_of(name: str) -> str:
    upper = name.strip().upper()
    if upper == "CT":
        return "CT"
    return "MR" if upper in _MR_NAMES or upper.startswith("MR") else upper


def _inside(root: Path, relative: str, problems: list, case: str) -> Path | None:
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        problems.append(
            DatasetProblem("path_outside_dataset", f"{relative!r} points outside the dataset", case)
        )
        return None
    return path


def _case_name(path: str) -> str:
    name = Path(path).name
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name


def _case_pairs(root: Path, description: dict, problems: list) -> list[tuple[str, Path, Path]]:
    """``(name, image, label)`` per case, from dataset.json's ``training`` list, else by
    matching file names in ``imagesTr/`` and ``labelsTr/``."""
    training = description.get("training")
    pairs: list[tuple[str, Path, Path]] = []
    if isinstance(training, list) and training:
        for index, entry in enumerate(training):
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                problems.append(
                    DatasetProblem(
                        "bad_training_entry",
                        f"dataset.json training[{index}] needs 'image' and 'label' paths",
                    )
                )
                continue
            name = _case_name(str(entry["label"]))
            image = _inside(root, str(entry["image"]), problems, name)
            label = _inside(root, str(entry["label"]), problems, name)
            if image is not None and label is not None:
                pairs.append((name, image, label))
    else:
        labels = {
            _case_name(p.name): p
            for p in sorted((root / "labelsTr").glob("*"))
            if p.name.endswith(_NIFTI_SUFFIXES)
        }
        images = {}
        for p in sorted((root / "imagesTr").glob("*")):
            name = _case_name(p.name)
            if name.endswith("_0000") and name not in labels:
                name = name[: -len("_0000")]  # nnU-Net's channel suffix
            images[name] = p
        for name in sorted(set(images) | set(labels)):
            pairs.append((name, images.get(name, root / "imagesTr" / name), labels.get(name)))
    names = [name for name, _, _ in pairs]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(DatasetProblem("duplicate_case", "the case is listed twice", name))
    return pairs


def _check_case(
    name: str, image_path: Path, label_path: Path | None, card: ModelCard, problems: list
) -> SiteCase | None:
    """Load one case's image and label and record what is wrong with them."""
    if label_path is None or not label_path.exists():
        problems.append(DatasetProblem("missing_label", "no label map in labelsTr/", name))
    if not image_path.exists():
        problems.append(DatasetProblem("missing_image", "no image in imagesTr/", name))
    if problems:
        return None
    image = _load(image_path, "image", name, problems)
    label = _load(label_path, "label", name, problems)
    if image is None or label is None:
        return None
    if image.modality is not None and image.modality != card.modality:
        problems.append(
            DatasetProblem(
                "modality_mismatch",
                f"the image is {image.modality}; model {card.name} needs {card.modality}",
                name,
            )
        )
    if image.array.shape != label.array.shape:
        problems.append(
            DatasetProblem(
                "shape_mismatch",
                f"image shape {list(image.array.shape)} != label shape {list(label.array.shape)}",
                name,
            )
        )
        return None
    if not np.allclose(image.affine, label.affine, atol=_GEOMETRY_TOLERANCE_MM):
        problems.append(
            DatasetProblem(
                "geometry_mismatch",
                "the label map's affine differs from the image's (origin, spacing or "
                f"orientation; tolerance {_GEOMETRY_TOLERANCE_MM} mm): labels must lie on "
                "the image grid",
                name,
            )
        )
    if image.n_phases > 1 and card.modality != "CT":
        problems.append(
            DatasetProblem(
                "not_3d",
                f"the image has {image.n_phases} frames; model {card.name} takes 3D images",
                name,
            )
        )
    labelled = _labelled_phases(label.array, card, name, problems)
    if not labelled:
        return None
    return SiteCase(name, image_path, label_path, labelled)


def _load(path: Path, what: str, case: str, problems: list) -> Volume | None:
    try:
        return load_volume(path)
    except SitetuneError as exc:
        problems.append(DatasetProblem(f"unreadable_{what}", exc.message, case))
        return None


def _labelled_phases(labels: np.ndarray, card: ModelCard, case: str, problems: list) -> tuple:
    """The frames with any label; problems for non-integer or unknown label values."""
    if not (
        np.issubdtype(labels.dtype, np.integer)
        or (np.all(np.isfinite(labels)) and np.array_equal(labels, np.round(labels)))
    ):
        problems.append(
            DatasetProblem("label_not_integer", "the label map holds non-integer values", case)
        )
        return ()
    unknown = sorted({int(v) for v in np.unique(labels)} - {0, *card.label_names})
    if unknown:
        problems.append(
            DatasetProblem(
                "unexpected_labels",
                f"label values {unknown} are not labels of model {card.name} ({_describe(card)})",
                case,
            )
        )
        return ()
    if labels.ndim == 3:  # an empty 3D map is a label too: nothing there (no lesions)
        return (0,)
    labelled = tuple(t for t in range(labels.shape[3]) if labels[..., t].any())
    if not labelled:
        problems.append(
            DatasetProblem("unlabelled_case", "every frame of the 4D label map is all zero", case)
        )
    return labelled


def _describe(card: ModelCard) -> str:
    return ", ".join(
        ["0 background", *(f"{v} {name}" for v, name in sorted(card.label_names.items()))]
    )


def _fingerprint(root: Path, cases: list[SiteCase]) -> str:
    """sha256 over the sorted case files (relative path and content)."""
    digest = hashlib.sha256()
    files = []
    for case in cases:
        for path in (case.image, case.label):
            files.extend(
                sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            )
    for path in sorted(set(files)):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()
