"""DICOM image series -> `Volume`, with exact geometry.

Single-frame instances (CT/MR Image Storage ...) and enhanced / legacy-converted
multi-frame objects are first turned into the same `Frame` records (one per 2D plane:
position, orientation, pixel spacing, rescale, cardiac phase), so one assembly path
handles both. Slices are ordered by position along the slice normal, never by
InstanceNumber; missing slices, irregular spacing, inconsistent orientation or size and
truncated pixel data are reported as `InvalidInput` errors naming what is wrong.

A 4D cardiac study arrives either as one series per phase or as one series whose
instances repeat the same positions with different temporal tags; phases are ordered by
Nominal Percentage of Cardiac Phase, else Trigger Time, else Temporal Position Index.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from sitetune.errors import InvalidInput, PayloadTooLarge, SitetuneError, UnsupportedInput
from sitetune.imaging.archive import ZipLimits, is_zip, iter_zip_files
from sitetune.imaging.volume import (
    LPS_TO_RAS,
    DicomSource,
    ImageLimits,
    PhaseInfo,
    SliceSource,
    Volume,
    WorldFrame,
)

logger = logging.getLogger(__name__)

ORIENTATION_TOLERANCE = 1e-4  # direction cosines
POSITION_TOLERANCE_MM = 0.01  # a slice may sit this far from the regular grid
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
DEFLATED = "1.2.840.10008.1.2.1.99"
# what reading a malformed header value raises (pydicom converts values lazily)
HEADER_ERRORS = (ValueError, TypeError, IndexError, KeyError, AttributeError,
                 NotImplementedError, OverflowError, UnicodeDecodeError)  # fmt: skip
JPEG2000 = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
            "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}  # fmt: skip


@dataclass(frozen=True)
class SeriesSummary:
    """What a user needs to pick one series out of an upload."""

    series_uid: str
    series_number: int | None
    description: str
    modality: str
    instances: int

    def as_dict(self) -> dict:
        return {
            "series_uid": self.series_uid,
            "series_number": self.series_number,
            "description": self.description,
            "modality": self.modality,
            "instances": self.instances,
        }


@dataclass
class Frame:
    """One 2D image plane of an instance, with everything needed to place it."""

    dataset_index: int
    frame_number: int | None  # 1-based, multi-frame objects only
    position: np.ndarray  # Image Position (Patient), LPS mm
    row_cosines: np.ndarray  # direction of increasing column index
    col_cosines: np.ndarray  # direction of increasing row index
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    size: tuple[int, int]  # (rows, columns)
    slope: float
    intercept: float
    phase_key: tuple[float | None, float | None, int | None]  # (percent, trigger ms, index)
    series_uid: str


def _float(value, default=None):
    return default if value is None or value == "" else float(value)


def _item(ds: Dataset, keyword: str) -> Dataset | None:
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _phase_key(ds: Dataset, frame_groups: Dataset | None = None):
    """(nominal %, trigger time ms, temporal index) from classic or functional-group tags."""
    percent = _float(ds.get("NominalPercentageOfCardiacPhase"))
    trigger = _float(ds.get("TriggerTime"))
    index = ds.get("TemporalPositionIdentifier")
    if frame_groups is not None:
        content = _item(frame_groups, "FrameContentSequence")
        if content is not None and content.get("TemporalPositionIndex") is not None:
            index = content.TemporalPositionIndex
        cardiac = _item(frame_groups, "CardiacSynchronizationSequence")
        if cardiac is not None:
            trigger = _float(cardiac.get("NominalCardiacTriggerDelayTime"), trigger)
            percent = _float(cardiac.get("NominalPercentageOfCardiacPhase"), percent)
    return (percent, trigger, None if index is None else int(index))


def _group_value(ds: Dataset, per_frame: Dataset | None, seq: str) -> Dataset | None:
    """A functional-group macro from the per-frame item, else from the shared one."""
    if per_frame is not None and (item := _item(per_frame, seq)) is not None:
        return item
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    return _item(shared, seq) if shared is not None else None


def is_localizer(ds: Dataset) -> bool:
    """Whether Image Type names the instance a localizer (scout, topogram, surview)."""
    return "LOCALIZER" in [str(v).upper() for v in (ds.get("ImageType") or [])]


def _without_localizers(datasets: list[Dataset], names: list[str]):
    """Drop localizers mixed into a series of other images (scanners export them with the
    series); a series of localizers only is kept, and refused later with the reason."""
    keep = [i for i, ds in enumerate(datasets) if not is_localizer(ds)]
    if keep and len(keep) < len(datasets):
        logger.info("left out %d localizer image(s)", len(datasets) - len(keep))
        return [datasets[i] for i in keep], [names[i] for i in keep]
    return datasets, names


def _without_duplicates(datasets: list[Dataset], names: list[str]):
    """Keep one copy of an instance sent twice (same SOP Instance UID and position); two
    different images sharing one SOP Instance UID cannot both be referenced: refused."""
    first: dict[str, int] = {}
    keep = []
    for i, ds in enumerate(datasets):
        uid = str(ds.get("SOPInstanceUID", "")) or f"#{i}"
        if uid not in first:
            first[uid] = i
            keep.append(i)
            continue
        other = datasets[first[uid]]
        same_place = ds.get("ImagePositionPatient") == other.get("ImagePositionPatient")
        if not same_place or ds.get("NumberOfFrames") != other.get("NumberOfFrames"):
            raise InvalidInput(
                f"{names[i]} and {names[first[uid]]} are different images with the same SOP "
                "Instance UID; every instance needs its own UID",
                code="duplicate_instances",
            )
    if len(keep) < len(datasets):
        logger.info("left out %d duplicate instance(s)", len(datasets) - len(keep))
    return [datasets[i] for i in keep], [names[i] for i in keep]


def _frames_of(ds: Dataset, index: int, name: str) -> list[Frame]:
    """The `Frame` records of one instance (one for single-frame, N for multi-frame)."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    n_frames = int(ds.get("NumberOfFrames") or 1)
    if n_frames > 1 and "PerFrameFunctionalGroupsSequence" not in ds:
        raise InvalidInput(
            f"{name}: a multi-frame {_sop_class_name(ds)} object of {n_frames} frames without "
            "per-frame functional groups (no position per frame); send an enhanced "
            "multi-frame or single-frame image series",
            code="unsupported_multiframe",
        )
    series_uid = str(ds.get("SeriesInstanceUID", ""))
    if "PerFrameFunctionalGroupsSequence" in ds:
        frames = []
        for f, per_frame in enumerate(ds.PerFrameFunctionalGroupsSequence, start=1):
            plane = _group_value(ds, per_frame, "PlanePositionSequence")
            orient = _group_value(ds, per_frame, "PlaneOrientationSequence")
            measures = _group_value(ds, per_frame, "PixelMeasuresSequence")
            rescale = _group_value(ds, per_frame, "PixelValueTransformationSequence")
            if plane is None or orient is None or measures is None:
                raise InvalidInput(
                    f"{name}: frame {f} lacks plane position, orientation or pixel spacing",
                    code="no_geometry",
                )
            frames.append(
                _frame(
                    index,
                    f,
                    plane.ImagePositionPatient,
                    orient.ImageOrientationPatient,
                    measures.PixelSpacing,
                    (rows, cols),
                    rescale or ds,
                    _phase_key(ds, per_frame),
                    series_uid,
                )
            )
        return frames
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if keyword not in ds:
            raise InvalidInput(
                f"{name}: a {_sop_class_name(ds)} image without {keyword} cannot be placed in "
                "space (secondary captures, radiographs and ultrasound are not volumes); send "
                "a CT or MR series",
                code="no_geometry",
            )
    return [
        _frame(
            index,
            None,
            ds.ImagePositionPatient,
            ds.ImageOrientationPatient,
            ds.PixelSpacing,
            (rows, cols),
            ds,
            _phase_key(ds),
            series_uid,
        )
    ]


def _checked_frames(ds: Dataset, index: int, name: str) -> list[Frame]:
    """`_frames_of`, with header values that do not parse (``Rows`` "1A", a position of
    two numbers...) reported as the input's fault rather than failing the request."""
    try:
        return _frames_of(ds, index, name)
    except InvalidInput:
        raise
    except HEADER_ERRORS as exc:
        raise InvalidInput(
            f"{name}: a geometry or pixel header value cannot be read ({exc})",
            code="invalid_header",
        ) from exc


def _frame(index, number, ipp, iop, spacing, size, rescale_source, key, series_uid) -> Frame:
    iop = np.asarray([float(v) for v in iop])
    return Frame(
        dataset_index=index,
        frame_number=number,
        position=np.asarray([float(v) for v in ipp]),
        row_cosines=iop[:3],
        col_cosines=iop[3:],
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        size=size,
        slope=_float(rescale_source.get("RescaleSlope"), 1.0),
        intercept=_float(rescale_source.get("RescaleIntercept"), 0.0),
        phase_key=key,
        series_uid=series_uid,
    )


def _is_volume_image(ds: Dataset) -> bool:
    return "PixelData" in ds and str(ds.get("SOPClassUID", "")) != SEGMENTATION_STORAGE


def _sop_class_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    return UID(str(uid)).name if uid else "no SOP class"


def _looks_like_raw_dicom(data: bytes) -> bool:
    """A file without preamble and meta header that starts with a group 0008 element
    (as older exports and some test corpora are): read it with ``force``."""
    return len(data) > 8 and data[:2] in (b"\x08\x00", b"\x00\x08")


def check_inflation(source, name: str, limit: int) -> None:
    """A deflated dataset is inflated by pydicom in one go: inflate it here first, in
    bounded steps, so a few kilobytes that expand to gigabytes are refused (413).
    ``source``: the file's bytes or a binary file object (other syntaxes: nothing read
    beyond the meta header)."""
    stream = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    stream.seek(128)
    if stream.read(4) != b"DICM":
        return  # not Part 10: nothing says it is deflated
    try:  # pydicom's public read_file_meta_info takes paths only
        meta = pydicom.filereader._read_file_meta_info(stream)
        syntax = str(meta.get("TransferSyntaxUID", ""))
        start = 132 + 12 + int(meta.get("FileMetaInformationGroupLength", 0))
    except Exception:
        return  # a damaged meta header: the parser reports it
    if syntax != DEFLATED:
        return
    stream.seek(start)
    inflater, seen = zlib.decompressobj(-zlib.MAX_WBITS), 0
    try:
        while block := stream.read(1 << 16):
            chunk = inflater.decompress(block, 1 << 20)
            while chunk:
                seen += len(chunk)
                if seen > limit:
                    raise PayloadTooLarge(
                        f"{name}: the deflated dataset inflates past {limit} bytes",
                        code="payload_too_large",
                    )
                chunk = inflater.decompress(inflater.unconsumed_tail, 1 << 20)
    except zlib.error as exc:
        raise InvalidInput(
            f"{name}: the deflated dataset is corrupt ({exc})", code="invalid_dicom"
        ) from exc


def _parse(data: bytes) -> Dataset:
    """Read a file, converting every top-level element now: pydicom converts lazily, so a
    malformed element (an unknown VR, a bad length) would otherwise fail wherever it is
    first touched."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError:
        if not _looks_like_raw_dicom(data):
            raise
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    for _ in ds:
        pass
    return ds


def read_datasets(
    sources: Iterable[tuple[str, bytes]], limits: ImageLimits | None = None
) -> tuple[list[Dataset], list[str]]:
    """Parse ``(name, bytes)`` pairs; return the image datasets and their names.

    Files that are not DICOM at all (no preamble, no recognisable header) are skipped, as
    are non-image objects (SR, SEG, presentation states); a file that starts as DICOM but
    cannot be parsed is an error, because silently dropping a slice would corrupt the
    volume.

    Raises:
        InvalidInput: a DICOM file is truncated or corrupt, or no image instance remains.
    """
    datasets, names, skipped_non_dicom, non_image = [], [], 0, defaultdict(int)
    for name, data in sources:
        if Path(name).name.upper() == "DICOMDIR":
            continue
        check_inflation(data, name, (limits or ImageLimits()).max_inflated_bytes)
        try:
            ds = _parse(data)
        except InvalidDicomError:
            skipped_non_dicom += 1
            continue
        except Exception as exc:  # pydicom raises many types for damaged files
            raise InvalidInput(
                f"{name} is a damaged DICOM file ({exc})", code="invalid_dicom"
            ) from exc
        if "SOPClassUID" not in ds:
            raise InvalidInput(
                f"{name} is a damaged DICOM file (no SOP Class UID; truncated?)",
                code="invalid_dicom",
            )
        if not _is_volume_image(ds):
            kind = _sop_class_name(ds)
            if "PixelData" not in ds and "Image" in kind:
                kind += " without pixel data"
            non_image[kind] += 1
            continue
        datasets.append(ds)
        names.append(name)
    if not datasets:
        found = ", ".join(f"{n} x {c}" for c, n in sorted(non_image.items())) or "nothing"
        raise InvalidInput(
            f"no DICOM image instances in the upload ({skipped_non_dicom} non-DICOM files; "
            f"non-image DICOM objects: {found})",
            code="no_images",
        )
    if skipped_non_dicom:
        logger.info("skipped %d non-DICOM files", skipped_non_dicom)
    return datasets, names


def _int_or_none(value) -> int | None:
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None  # a malformed Series Number only names the series less well


def _series_summaries(datasets: list[Dataset]) -> list[SeriesSummary]:
    by_series: dict[str, list[Dataset]] = defaultdict(list)
    for ds in datasets:
        by_series[str(ds.get("SeriesInstanceUID", ""))].append(ds)
    out = []
    for uid, group in by_series.items():
        first = group[0]
        number = first.get("SeriesNumber")
        out.append(
            SeriesSummary(
                uid,
                _int_or_none(number),
                str(first.get("SeriesDescription", "")),
                str(first.get("Modality", "")),
                len(group),
            )
        )
    return sorted(out, key=lambda s: (s.series_number is None, s.series_number, s.series_uid))


def _select(datasets: list[Dataset], names: list[str], series: str | None):
    summaries = _series_summaries(datasets)
    if series is not None:
        wanted = {s.series_uid for s in summaries if series in (s.series_uid, str(s.series_number))}
        if not wanted:
            raise InvalidInput(
                f"series {series!r} is not in the upload; series found are listed in details",
                code="series_not_found",
                details=[s.as_dict() for s in summaries],
            )
        keep = [
            i for i, ds in enumerate(datasets) if str(ds.get("SeriesInstanceUID", "")) in wanted
        ]
        datasets, names = [datasets[i] for i in keep], [names[i] for i in keep]
        summaries = [s for s in summaries if s.series_uid in wanted]
    return datasets, names, summaries


def _check_same(frames: list[Frame], names: list[str]) -> None:
    first = frames[0]
    for f in frames[1:]:
        where = names[f.dataset_index]
        if f.size != first.size:
            raise InvalidInput(
                f"{where}: image size {f.size} differs from {first.size} in the same series",
                code="inconsistent_series",
            )
        if (
            np.abs(f.row_cosines - first.row_cosines).max() > ORIENTATION_TOLERANCE
            or np.abs(f.col_cosines - first.col_cosines).max() > ORIENTATION_TOLERANCE
        ):
            raise InvalidInput(
                f"{where}: image orientation differs from the rest of the "
                "series (a localizer or a reformatted stack mixed in?)",
                code="inconsistent_series",
            )
        if not np.allclose(f.pixel_spacing, first.pixel_spacing, atol=1e-4):
            raise InvalidInput(
                f"{where}: pixel spacing {f.pixel_spacing} differs from "
                f"{first.pixel_spacing} in the same series",
                code="inconsistent_series",
            )


def _stack_geometry(frames: list[Frame]) -> tuple[list[Frame], np.ndarray]:
    """Sort one phase's frames along the normal, check the spacing, return (frames, LPS affine)."""
    first = frames[0]
    normal = np.cross(first.row_cosines, first.col_cosines)
    frames = sorted(frames, key=lambda f: float(f.position @ normal))
    positions = np.array([f.position for f in frames])
    distances = positions @ normal
    steps = np.diff(distances)
    if len(frames) > 1 and steps.min() < POSITION_TOLERANCE_MM:
        raise InvalidInput(
            f"two images share the slice position {distances[int(np.argmin(steps))]:.3f} mm "
            "without distinct cardiac phase or temporal tags; upload one series per phase",
            code="duplicate_slices",
        )
    if len(frames) > 2:
        step = float(np.median(steps))
        ratio = steps / step
        if np.any(ratio > 1.5):
            gap = int(np.argmax(ratio))
            missing = round(float(ratio[gap])) - 1
            raise InvalidInput(
                f"{missing} slice(s) missing between positions {distances[gap]:.2f} and "
                f"{distances[gap + 1]:.2f} mm along the slice normal (spacing {step:.3f} mm); "
                "upload the complete series",
                code="missing_slices",
            )
        deviation = np.abs(distances - distances[0] - step * np.arange(len(frames)))
        if deviation.max() > max(POSITION_TOLERANCE_MM, 0.01 * step):
            raise InvalidInput(
                f"irregular slice spacing ({steps.min():.3f} to {steps.max():.3f} mm); "
                "sitetune needs a regularly spaced series (resample it first)",
                code="irregular_spacing",
            )
    if len(frames) > 1:
        # Least-squares fit of position = origin + k * step_vector (exact for gantry tilt).
        k = np.arange(len(frames), dtype=np.float64)
        design = np.stack([np.ones_like(k), k], axis=1)
        (origin, slice_vector), *_ = np.linalg.lstsq(design, positions, rcond=None)
    else:
        origin, slice_vector = positions[0], normal  # one slice: thickness unknown, 1 mm
    row_spacing, col_spacing = first.pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = first.row_cosines * col_spacing
    affine[:3, 1] = first.col_cosines * row_spacing
    affine[:3, 2] = slice_vector
    affine[:3, 3] = origin
    return frames, affine


_PHASE_TAGS = ("Nominal Percentage of Cardiac Phase", "Trigger Time", "Temporal Position Index")


def _position_key(f: Frame) -> tuple:
    return tuple(np.round(f.position / POSITION_TOLERANCE_MM).astype(int))


def _group_by_slot(groups: dict, slot: int) -> list[list[Frame]] | None:
    """Order phase groups by one temporal tag, or None if that tag does not tell them apart."""
    values = {}
    for key, members in groups.items():
        value = members[0].phase_key[slot]
        if value is None or any(m.phase_key[slot] != value for m in members):
            return None
        values[key] = value
    if len(set(values.values())) != len(values):
        return None
    return [groups[k] for k in sorted(groups, key=values.__getitem__)]


def _split_phases(frames: list[Frame], summaries: list[SeriesSummary]) -> list[list[Frame]]:
    """Split frames into ordered phases: one series per phase, or temporal tags in one series.

    Several series form one 4D study only when each is one phase with a distinguishing
    cardiac tag; otherwise the upload is ambiguous and the user must pick a series.
    """
    if len(summaries) > 1:
        by_series: dict[str, list[Frame]] = defaultdict(list)
        for f in frames:
            by_series[f.series_uid].append(f)
        for slot in range(3):
            # A tag may jitter slice to slice (trigger time); the series' first frame decides.
            keyed = {uid: [fs[0]] for uid, fs in by_series.items()}
            if (ordered := _group_by_slot(keyed, slot)) is not None:
                return [by_series[group[0].series_uid] for group in ordered]
        raise InvalidInput(
            f"the upload holds {len(summaries)} series that are not phases of one cardiac "
            "study; choose one with the `series` option (series UID or number)",
            code="ambiguous_series",
            details=[s.as_dict() for s in summaries],
        )
    if len({_position_key(f) for f in frames}) == len(frames):
        return [frames]  # no position repeats: one phase, whatever the temporal tags say
    for slot in range(3):
        groups: dict = defaultdict(list)
        for f in frames:
            groups[f.phase_key[slot]].append(f)
        if len(groups) > 1 and (ordered := _group_by_slot(groups, slot)) is not None:
            logger.debug("phases ordered by %s", _PHASE_TAGS[slot])
            return ordered
    return [frames]  # repeated positions, no usable tag: _stack_geometry reports duplicates


def _j2k_size(codestream: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG 2000 codestream's SIZ marker segment, or None."""
    at = codestream.find(b"\xff\x4f\xff\x51")
    if at < 0 or len(codestream) < at + 24:
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", codestream[at + 8 : at + 24])
    return xsiz - xosiz, ysiz - yosiz


def _check_codestream(ds: Dataset, name: str) -> None:
    """A JPEG 2000 decoder allocates the image its codestream declares, whatever the DICOM
    header says: that size is checked first (a 65535 x 65535 codestream is a 413)."""
    if str(getattr(ds.file_meta, "TransferSyntaxUID", "")) not in JPEG2000:
        return
    from pydicom.encaps import generate_frames

    try:
        first = next(
            generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1))
        )
    except Exception:
        return  # undecodable encapsulation: the decoder reports it as invalid pixel data
    size = _j2k_size(first[:4096])
    if size is not None and size[0] * size[1] > int(ds.Rows) * int(ds.Columns):
        raise PayloadTooLarge(
            f"{name}: the JPEG 2000 codestream declares {size[0]} x {size[1]} pixels, the "
            f"header {ds.Columns} x {ds.Rows}; refused before decoding",
            code="payload_too_large",
        )


def _decode(ds: Dataset, name: str) -> np.ndarray:
    _check_codestream(ds, name)
    try:
        pixels = ds.pixel_array
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # ValueError, RuntimeError...; the Rust RLE decoder's panic
        # (pyo3's PanicException derives from BaseException) on corrupt segments: found by
        # bench/fuzz_loaders.py
        raise InvalidInput(
            f"{name}: pixel data cannot be decoded ({exc})", code="invalid_pixel_data"
        ) from exc
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise InvalidInput(
            f"{name}: colour images are not volumes (SamplesPerPixel={ds.SamplesPerPixel})",
            code="unsupported_image",
        )
    return pixels


def volume_from_datasets(
    datasets: list[Dataset],
    names: list[str] | None = None,
    series: str | None = None,
    *,
    decode: bool = True,
    limits: ImageLimits | None = None,
) -> Volume:
    """Assemble image datasets (one series, or the phases of one cardiac study) into a Volume.

    Args:
        datasets: parsed instances, any order; pixel data is decoded and then dropped.
        names: a display name per dataset for error messages (file names in the upload).
        series: a SeriesInstanceUID or SeriesNumber to pick when several series are present.
        decode: False for the geometry and source references only (building a SEG or SR
            later): the array is then a read-only zero view of the right shape.
        limits: declared sizes refused before decoding (`PayloadTooLarge`).

    Raises:
        InvalidInput: inconsistent, incomplete, ambiguous or undecodable input.
    """
    try:
        return _assemble(datasets, names, series, decode, limits)
    except SitetuneError:
        raise
    except HEADER_ERRORS as exc:  # a header value that does not parse, wherever it is read
        raise InvalidInput(
            f"a DICOM header value cannot be read ({type(exc).__name__}: {exc})",
            code="invalid_header",
        ) from exc


def _assemble(datasets, names, series, decode, limits) -> Volume:
    names = names or [f"instance {i + 1}" for i in range(len(datasets))]
    datasets, names, summaries = _select(datasets, names, series)
    datasets, names = _without_duplicates(datasets, names)
    datasets, names = _without_localizers(datasets, names)
    frames = [f for i, ds in enumerate(datasets) for f in _checked_frames(ds, i, names[i])]
    limits = limits or ImageLimits()
    declared = sum(f.size[0] * f.size[1] for f in frames)
    if declared > limits.max_voxels:  # before a single frame is decoded
        limits.check_voxels((declared,), f"the series ({len(frames)} frames of {frames[0].size})")
    split = _split_phases(frames, summaries)
    try:
        _check_same(frames, names)
    except InvalidInput as exc:
        if len(summaries) > 1:  # unrelated series that happen to carry phase tags
            raise InvalidInput(
                f"the upload holds {len(summaries)} series that do not share one geometry "
                f"({exc.message}); choose one with the `series` option",
                code="ambiguous_series",
                details=[s.as_dict() for s in summaries],
            ) from exc
        raise
    phases = [_stack_geometry(p) for p in split]
    affine_lps = phases[0][1]
    for t, (_, other) in enumerate(phases[1:], start=1):
        if not np.allclose(other, affine_lps, atol=POSITION_TOLERANCE_MM):
            raise InvalidInput(
                f"phase {t} covers different slice positions than phase 0; "
                "every phase must have the same geometry",
                code="inconsistent_phases",
            )
    rows, cols = frames[0].size
    n_slices = len(phases[0][0])
    if any(len(p[0]) != n_slices for p in phases):
        raise InvalidInput("phases have different numbers of slices", code="inconsistent_phases")
    shape = (cols, rows, n_slices, len(phases))
    if not decode:
        for ds in datasets:
            if "PixelData" in ds:
                del ds.PixelData
        array = np.broadcast_to(np.zeros((), dtype=np.float32), shape)
    else:
        array = _decode_all(datasets, names, phases, shape)
    infos = []
    for t, (ordered, _) in enumerate(phases):
        percent, trigger, position = ordered[0].phase_key
        infos.append(PhaseInfo(t, percent, trigger, position, ordered[0].series_uid))
    first = datasets[0]
    source = DicomSource(
        study_uid=str(first.get("StudyInstanceUID", "")),
        frame_of_reference_uid=first.get("FrameOfReferenceUID"),
        datasets=datasets,
        slices=[[SliceSource(f.dataset_index, f.frame_number) for f in p[0]] for p in phases],
    )
    return Volume(
        array=array[..., 0] if len(phases) == 1 else array,
        affine=LPS_TO_RAS @ affine_lps,
        modality=str(first.get("Modality", "")) or None,
        phases=tuple(infos),
        native_frame=WorldFrame.LPS,
        dicom=source,
    )


def _decode_all(datasets, names, phases, shape) -> np.ndarray:
    """Decode every needed frame into a ``(X, Y, Z, T)`` float32 array (rescale applied),
    dropping each instance's pixel data once placed."""
    rows, cols = shape[1], shape[0]
    array = np.empty(shape, dtype=np.float32)
    needed: dict[int, list[tuple[int, int, Frame]]] = defaultdict(list)
    for t, (ordered, _) in enumerate(phases):
        for k, f in enumerate(ordered):
            needed[f.dataset_index].append((t, k, f))
    for index, placements in needed.items():
        pixels = _decode(datasets[index], names[index])
        if pixels.ndim == 2:
            pixels = pixels[None]
        for t, k, f in placements:
            plane = pixels[(f.frame_number or 1) - 1]
            if plane.shape != (rows, cols):
                raise InvalidInput(
                    f"{names[index]}: pixel data is {plane.shape}, header says {(rows, cols)}",
                    code="invalid_pixel_data",
                )
            array[:, :, k, t] = plane.T.astype(np.float32) * f.slope + f.intercept
        del datasets[index].PixelData  # keep headers only, for source references
    return array


def load_dicom(
    source: Path | str | Iterable[Dataset],
    *,
    series: str | None = None,
    limits: ZipLimits | None = None,
    decode: bool = True,
    image_limits: ImageLimits | None = None,
) -> Volume:
    """Load a DICOM series (or a multi-phase cardiac study) into a `Volume`
    (``decode=False``: geometry and headers only, see `volume_from_datasets`).

    Args:
        source: a folder (searched recursively), a ``.zip`` file, a single DICOM file
            (e.g. an enhanced multi-frame object), or parsed datasets.
        series: SeriesInstanceUID or SeriesNumber selecting one series of several.
        limits: bounds for zip uploads.
    """
    if not isinstance(source, str | Path):
        datasets = list(source)
        return volume_from_datasets(datasets, series=series, decode=decode, limits=image_limits)
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        pairs = ((str(p.relative_to(path)), p.read_bytes()) for p in files)
    elif is_zip(path):
        pairs = iter_zip_files(path, limits)
    elif path.is_file():
        pairs = iter([(path.name, path.read_bytes())])
    else:
        raise UnsupportedInput(f"{path} is neither a folder, a zip nor a DICOM file")
    datasets, names = read_datasets(pairs, image_limits)
    return volume_from_datasets(datasets, names, series=series, decode=decode, limits=image_limits)
