"""Source headers made fit to derive DICOM objects (SEG, SR) from, whatever sent them.

highdicom copies the patient and study attributes of the source images into a SEG or an
SR and reads them as attributes, so a source lacking a Type 2 attribute (anonymised
exports routinely drop ``PatientBirthDate``, ``PatientSex``, ``StudyID``,
``AccessionNumber``, ``ReferringPhysicianName``, ``StudyTime``) raises ``AttributeError``,
and a value outside its value representation (``PatientSex`` "U", a malformed date)
raises ``ValueError``. highdicom has no option for either, so this module, and only it,
prepares copies of the headers: Type 2 attributes present (empty when absent or
invalid, as PS3.5 allows for Type 2), Type 1 UIDs generated where the standard lets a
derived object carry a new one. The source datasets themselves are never changed.

`unavailable_reason` says, before any pixel work, why a SEG cannot be derived at all
(e.g. no Frame of Reference: a SEG must share its source's frame, inventing one would
place the mask nowhere).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

# Patient / General Study module attributes highdicom reads (all Type 2 in the source IODs).
TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
_PATIENT_SEX = {"M", "F", "O"}
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_MAX_LENGTH = {"StudyID": 16, "AccessionNumber": 16, "PatientID": 64}


def _valid(keyword: str, value) -> bool:
    """Whether a present Type 2 value can be copied as it is."""
    if value is None:
        return True
    text = str(value).strip()
    if text == "":
        return True
    if keyword == "PatientSex":
        return text in _PATIENT_SEX
    if keyword.endswith("Date"):
        return bool(_DATE.match(text))
    if keyword.endswith("Time"):
        return bool(_TIME.match(text))
    limit = _MAX_LENGTH.get(keyword)
    return limit is None or len(text) <= limit


def _positive(value) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


def conformed(
    datasets: Sequence[Dataset], slice_thickness_mm: float | None = None
) -> list[Dataset]:
    """Copies of ``datasets`` (headers; pixel data left out) that highdicom can derive from.

    Every Type 2 patient/study attribute is present: copied when valid, empty otherwise.
    A missing, empty or non-positive Slice Thickness (Type 2 in the Image Plane module,
    read by highdicom for the SEG's pixel measures) becomes ``slice_thickness_mm`` (the
    slice step the loader measured); Spacing Between Slices is left out, so highdicom
    derives it from the positions (sources carry negative or stale values).
    A missing Study or Series Instance UID is generated from the instances' own UIDs, so
    every call on the same sources (the SEG's, then the SR's) agrees; a derived object
    then starts a new study in the receiving PACS.
    """
    study_uid = next((str(d.StudyInstanceUID) for d in datasets if d.get("StudyInstanceUID")), None)
    series_uid = next(
        (str(d.SeriesInstanceUID) for d in datasets if d.get("SeriesInstanceUID")), None
    )
    seeds = sorted(str(d.get("SOPInstanceUID", "")) for d in datasets)
    study_uid = study_uid or generate_uid(entropy_srcs=["study", *seeds])
    series_uid = series_uid or generate_uid(entropy_srcs=["series", *seeds])
    out = []
    for ds in datasets:
        header = _copy(ds)
        header.pop("PixelData", None)
        for keyword in TYPE2_PATIENT_STUDY:
            value = header.get(keyword)
            if value is None or not _valid(keyword, value):
                _replace(header, keyword, "")
        if slice_thickness_mm is not None and not _positive(header.get("SliceThickness")):
            _replace(header, "SliceThickness", f"{slice_thickness_mm:.6g}")
        header.pop("SpacingBetweenSlices", None)
        if not header.get("StudyInstanceUID"):
            _replace(header, "StudyInstanceUID", study_uid)
        if not header.get("SeriesInstanceUID"):
            _replace(header, "SeriesInstanceUID", series_uid)
        out.append(header)
    return out


def _copy(ds: Dataset) -> Dataset:
    """A new dataset holding the same elements: replacing one in it (`_replace`) leaves
    ``ds`` as it was, without deep-copying every header."""
    header = Dataset()
    for element in ds:
        header[element.tag] = element
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    return header


def _replace(header: Dataset, keyword: str, value) -> None:
    tag = tag_for_keyword(keyword)
    header[tag] = DataElement(tag, dictionary_VR(tag), value)


def _multiframe_iod(ds: Dataset) -> bool:
    """Whether the SOP class is a multi-frame IOD, as highdicom decides it (it then reads
    the shared functional groups, which RT Dose, NM or US multi-frame objects lack)."""
    if "NumberOfFrames" in ds:
        return True
    try:  # highdicom's own test; private, so guarded
        from highdicom._standard_utils import is_multiframe_image
    except ImportError:
        return False
    try:
        return bool(is_multiframe_image(ds))
    except Exception:  # an unknown SOP class: not in highdicom's IOD tables
        return False


def unavailable_reason(datasets: Sequence[Dataset]) -> str | None:
    """Why no DICOM SEG can reference these source images, or None when one can."""
    if not datasets:
        return "no source DICOM images"
    if any(not d.get("FrameOfReferenceUID") for d in datasets):
        return (
            "the source images have no Frame of Reference UID, which a DICOM SEG must share "
            "with them (the mask, maps and JSON are still available)"
        )
    if len({str(d.FrameOfReferenceUID) for d in datasets}) > 1:
        return "the source images do not share one Frame of Reference"
    if any(_multiframe_iod(d) and "SharedFunctionalGroupsSequence" not in d for d in datasets):
        return (
            "the source is a multi-frame object without functional groups (e.g. RT Dose, "
            "NM), which a DICOM SEG cannot reference frame by frame"
        )
    if any(not d.get("SOPInstanceUID") or not d.get("SOPClassUID") for d in datasets):
        return "some source images have no SOP Instance or SOP Class UID to reference"
    return None
