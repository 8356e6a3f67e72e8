"""Inference of local files through the service: find the cases of an input, upload each
one, and write what the service provides for its result into an output folder.

An input is one case or a batch (`discover`):

- a NIfTI file (``.nii``, ``.nii.gz``) or a ``.zip`` of DICOM files: one case, sent as is;
- a folder holding DICOM files (``*.dcm``, files with the DICM preamble, a ``DICOMDIR``):
  one case, zipped on the fly into a temporary file (streamed from disk, never held in
  memory) with everything below it;
- any other folder: a batch; each NIfTI file, each zip and each sub-folder in it is one
  case (a sub-folder is zipped as above, so a study with one sub-folder per series is one
  case). Hidden entries and earlier output folders (``*.sitetune``) are left out.

Outputs (`write_outputs`): ``result.json`` (the JSON answer) and each output the answer's
``outputs`` lists as available: ``mask.nii.gz``, ``thickness.nii.gz`` / ``lesions.nii.gz``,
the SEG (``seg.dcm``, or ``seg-<phase>.dcm`` per phase when there are several) and
``sr.dcm``. An unavailable output is skipped with its reason. The files are written to a
hidden staging folder beside the output folder and renamed into place once all are in,
so a case that fails leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from sitetune.clients.client import SitetuneClient, SitetuneClientError, SitetuneConnectionError
from sitetune.clients.results import Inference, InferenceResult, Output

OUTPUT_SUFFIX = ".sitetune"
SUMMARY_FILE = "result.json"
_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_EXTENSIONS = {
    "application/gzip": ".nii.gz",
    "application/dicom": ".dcm",
    "application/json": ".json",
    "image/png": ".png",
    "image/svg+xml": ".svg",
}
#: Answers that stop a whole batch: every other case would get them too.
_FATAL_STATUSES = frozenset({401, 403})


class InputKind(StrEnum):
    NIFTI = "nifti"
    DICOM_ZIP = "dicom-zip"
    DICOM_FOLDER = "dicom-folder"


@dataclass(frozen=True)
class Case:
    """One upload: ``path`` of ``kind``, its results written to ``output_dir``."""

    name: str
    path: Path
    kind: InputKind
    output_dir: Path


@dataclass(frozen=True)
class Discovery:
    """The cases of an input; ``batch`` when it was a folder of cases; ``ignored``: the
    entries of a batch folder that are no case."""

    cases: list[Case]
    batch: bool
    ignored: list[Path] = field(default_factory=list)


@dataclass
class CaseOutcome:
    """What became of one case: its result and the files written, or the error."""

    case: Case
    result: InferenceResult | None = None
    error: SitetuneClientError | None = None
    written: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # output -> why not written
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        """``done``, ``refused`` (the service refused the input: HTTP 4xx) or ``failed``."""
        if self.error is None:
            return "done"
        return "refused" if self.error.status and 400 <= self.error.status < 500 else "failed"


@dataclass(frozen=True)
class Planned:
    """One output file to fetch: ``GET url?params`` into ``filename``."""

    output: str
    filename: str
    url: str
    params: dict[str, str] | None = None


class Reporter(Protocol):
    """What `run_cases` tells as it goes (the command line prints it on stderr)."""

    def uploading(self, case: Case, sent: int, total: int) -> None: ...
    def processed(self, case: Case, result: InferenceResult, seconds: float) -> None: ...
    def skipped(self, case: Case, output: str, reason: str) -> None: ...
    def finished(self, outcome: CaseOutcome) -> None: ...


# -- input discovery -------------------------------------------------------------------


def file_kind(path: Path) -> InputKind | None:
    """The kind of a file by its name: NIfTI, a DICOM zip, or None."""
    name = path.name.lower()
    if name.endswith(_NIFTI_SUFFIXES):
        return InputKind.NIFTI
    return InputKind.DICOM_ZIP if name.endswith(".zip") else None


def case_name(path: Path) -> str:
    """``case.nii.gz`` -> ``case``; ``study.zip`` -> ``study``; a folder: its name."""
    name = path.name
    for suffix in (*_NIFTI_SUFFIXES, ".zip"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def looks_like_dicom(path: Path) -> bool:
    """A ``.dcm`` file, a ``DICOMDIR``, or a file with the DICM preamble."""
    if path.suffix.lower() == ".dcm" or path.name.upper() == "DICOMDIR":
        return True
    try:
        with path.open("rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def is_dicom_folder(folder: Path) -> bool:
    """True when ``folder`` holds a DICOM file directly (not only in sub-folders)."""
    return any(p.is_file() and looks_like_dicom(p) for p in _visible(folder))


def discover(path: str | Path, output: str | Path | None = None) -> Discovery:
    """The cases of the input ``path`` and where each one's results go.

    ``output`` (default: ``<name>.sitetune`` beside the input) is the case's folder for
    one case, and holds one folder per case (named by `case_name`) for a batch.

    Raises:
        ValueError: ``path`` does not exist, is a file of another type, or is a batch
            folder without any case.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    root = Path(output) if output is not None else path.parent / (case_name(path) + OUTPUT_SUFFIX)
    if path.is_file():
        kind = file_kind(path)
        if kind is None:
            raise ValueError(
                f"{path} is not a NIfTI file (.nii, .nii.gz), a DICOM zip (.zip) or a folder"
            )
        return Discovery([Case(case_name(path), path, kind, root)], batch=False)
    if is_dicom_folder(path):
        return Discovery([Case(path.name, path, InputKind.DICOM_FOLDER, root)], batch=False)
    cases, ignored, names = [], [], set()
    for entry in _visible(path):
        kind = InputKind.DICOM_FOLDER if entry.is_dir() else file_kind(entry)
        if entry.name.endswith(OUTPUT_SUFFIX) or kind is None:
            ignored.append(entry)
            continue
        name = _unique(case_name(entry), names)
        cases.append(Case(name, entry, kind, root / name))
    if not cases:
        raise ValueError(
            f"{path} holds no case: no DICOM file, NIfTI file (.nii, .nii.gz), zip or sub-folder"
        )
    return Discovery(cases, batch=True, ignored=ignored)


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    taken.add(candidate)
    return candidate


@contextmanager
def upload_path(case: Case) -> Iterator[Path]:
    """The file to send for ``case``: the file itself, or its folder zipped into a
    temporary file that is removed afterwards."""
    if case.kind is not InputKind.DICOM_FOLDER:
        yield case.path
        return
    with tempfile.TemporaryDirectory(prefix="sitetune-upload-") as tmp:
        yield zip_folder(case.path, Path(tmp) / f"{case.name}.zip")


def zip_folder(folder: Path, out: Path) -> Path:
    """Zip the files below ``folder`` (names relative to it; hidden entries left out) into
    ``out``, one file at a time from disk."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                source = Path(root) / name
                if not name.startswith(".") and source.is_file():
                    archive.write(source, source.relative_to(folder).as_posix())
    return out


# -- outputs ---------------------------------------------------------------------------


def plan_outputs(outputs: dict[str, Output]) -> tuple[list[Planned], dict[str, str]]:
    """The files to fetch for a result's ``outputs``, and the outputs skipped with why.

    ``summary`` is the answer itself (written as ``result.json``, not fetched) and
    ``image`` the caller's own input (kept by the service for its viewer). A file is
    named by its URL's last part when that has an extension (``bullseye.svg``), else by
    the output and its media type (``mask.nii.gz``); a SEG with several ``phases`` is one
    file per phase (``seg-ed.dcm``, ``seg-phase-1.dcm``).
    """
    planned, skipped = [], {}
    for name, output in outputs.items():
        if name in ("summary", "image"):
            continue
        if not output.available:
            skipped[name] = output.reason or "not available"
            continue
        if not output.url:
            skipped[name] = "the service gave no URL"
            continue
        if not output.url.startswith("/"):  # the token goes to the service alone
            skipped[name] = f"{output.url} is not a path on the service"
            continue
        extension = _EXTENSIONS.get(output.media_type or "", "")
        phases = output.phases or []
        if len(phases) > 1:
            for phase in phases:
                label = f"phase-{phase}" if phase.isdigit() else phase.lower()
                planned.append(
                    Planned(name, f"{name}-{label}{extension}", output.url, {"phase": phase})
                )
            continue
        last = output.url.split("?")[0].rstrip("/").rpartition("/")[2]
        filename = last if "." in last.strip(".") else f"{name}{extension}"  # bullseye.svg
        params = {"phase": phases[0]} if phases else None
        planned.append(Planned(name, filename, output.url, params))
    return planned, skipped


def write_outputs(
    client: SitetuneClient, result: InferenceResult, target: Path
) -> tuple[list[str], dict[str, str]]:
    """Fetch ``result``'s outputs and write them with ``result.json`` into ``target``.

    All files go to a staging folder beside ``target`` first; a new ``target`` is that
    folder renamed, an existing one gets each file moved in (other files in it stay).
    Returns the file names written and the outputs skipped (output -> reason); an output
    the service answers ``409 output_unavailable`` for is skipped too.
    """
    planned, skipped = plan_outputs(result.outputs)
    answer = json.loads(json.dumps(result.answer or result.model_dump(mode="json")))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.partial"
    staging.mkdir()  # the umask's permissions (mkdtemp's would be 0700)
    try:
        fetched: list[Planned] = []
        for item in planned:
            if item.output in skipped:
                continue
            try:
                client.download(item.url, staging / item.filename, item.params)
            except SitetuneClientError as error:
                if error.status != 409 or error.code != "output_unavailable":
                    raise
                skipped[item.output] = error.message  # and no file of it: drop phases in
                for done in [f for f in fetched if f.output == item.output]:
                    (staging / done.filename).unlink()
                    fetched.remove(done)
                answer.setdefault("outputs", {})[item.output] = {
                    "available": False,
                    "reason": error.message,
                }
                continue
            fetched.append(item)
        (staging / SUMMARY_FILE).write_text(json.dumps(answer, indent=2) + "\n")
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [SUMMARY_FILE, *(f.filename for f in fetched)], skipped


def _publish(staging: Path, target: Path) -> None:
    if not target.exists():
        staging.rename(target)
        return
    if not target.is_dir():
        raise ValueError(f"{target} exists and is not a folder")
    for path in sorted(staging.iterdir()):
        os.replace(path, target / path.name)


# -- running ---------------------------------------------------------------------------


def run_case(
    client: SitetuneClient,
    kind: Inference | str,
    case: Case,
    reporter: Reporter,
    *,
    model: str | None = None,
    version: str | None = None,
    series: str | None = None,
) -> CaseOutcome:
    """Upload one case, wait for its result and write its outputs.

    An error answer for the case (the input refused, the service failing on it) or a
    local error (the input unreadable, the disk full) is the outcome's ``error``; nothing
    is left in ``case.output_dir`` then.

    Raises:
        SitetuneConnectionError: the service could not be reached.
        SitetuneClientError: 401 / 403 (the token): no other case would fare better.
    """
    started = time.monotonic()
    outcome = CaseOutcome(case)
    try:
        with upload_path(case) as path:
            result = client.analyse(
                kind, path, model=model, version=version, series=series,
                progress=lambda sent, total: reporter.uploading(case, sent, total),
            )  # fmt: skip
        reporter.processed(case, result, time.monotonic() - started)
        outcome.result = result
        outcome.written, outcome.skipped = write_outputs(client, result, case.output_dir)
        for output, reason in outcome.skipped.items():
            reporter.skipped(case, output, reason)
    except SitetuneConnectionError:
        raise
    except SitetuneClientError as error:
        if error.status in _FATAL_STATUSES:
            raise
        outcome.result, outcome.error = None, error
    except (OSError, ValueError) as error:  # an unreadable input, a full disk
        outcome.result = None
        outcome.error = SitetuneClientError(None, "local_error", str(error))
    outcome.seconds = time.monotonic() - started
    reporter.finished(outcome)
    return outcome


def run_cases(
    client: SitetuneClient,
    kind: Inference | str,
    cases: Sequence[Case],
    reporter: Reporter,
    *,
    model: str | None = None,
    version: str | None = None,
    series: str | None = None,
) -> list[CaseOutcome]:
    """`run_case` for each case in turn (one failing does not stop the others)."""
    return [
        run_case(client, kind, case, reporter, model=model, version=version, series=series)
        for case in cases
    ]
