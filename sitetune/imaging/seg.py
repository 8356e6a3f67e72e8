"""Label maps -> DICOM Segmentation objects (highdicom, BINARY) on the source grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from sitetune import __version__
from sitetune.imaging.codes import StructureCode
from sitetune.imaging.derived import conformed, unavailable_reason
from sitetune.imaging.volume import Volume


def _frames_for_source(labels: np.ndarray, source: Volume) -> tuple[list[Dataset], np.ndarray]:
    """Source datasets and the label frames in the order highdicom expects for them."""
    dicom = source.dicom
    slices = dicom.slices[0]
    datasets = dicom.phase_datasets(0)
    planes = np.ascontiguousarray(np.transpose(labels, (2, 1, 0)))  # (k, rows, cols)
    if all(s.frame_number is None for s in slices):
        order = {id(dicom.datasets[s.dataset_index]): k for k, s in enumerate(slices)}
        return datasets, planes[[order[id(ds)] for ds in datasets]]
    if len(datasets) != 1:
        raise ValueError("a multi-frame source must be a single object")
    n_frames = int(datasets[0].NumberOfFrames)
    frames = np.zeros((n_frames, *planes.shape[1:]), dtype=planes.dtype)
    for k, s in enumerate(slices):
        frames[s.frame_number - 1] = planes[k]
    return datasets, frames


def seg_unavailable_reason(source: Volume) -> str | None:
    """Why no SEG can be derived from ``source`` (one phase), or None when one can."""
    if source.dicom is None:
        return "the input was not DICOM (a SEG references DICOM source images)"
    return unavailable_reason(source.dicom.phase_datasets(0))


def segment_numbers(label_values) -> dict[int, int]:
    """Label value -> its segment number in a SEG of `segmentation_from_labels`: 1, 2, ...
    in increasing label value."""
    return {value: number for number, value in enumerate(sorted(label_values), start=1)}


def segmentation_from_labels(
    labels: np.ndarray,
    source: Volume,
    structures: Mapping[int, StructureCode],
    *,
    algorithm_name: str,
    algorithm_version: str,
    series_number: int = 900,
    series_description: str | None = None,
    series_instance_uid: str | None = None,
    instance_number: int = 1,
    provenance: Sequence[str] = (),
) -> hd.seg.Segmentation:
    """Build a BINARY DICOM SEG for a label map lying on a DICOM volume's grid.

    Args:
        labels: ``(X, Y, Z)`` integer label map on ``source``'s grid (one phase).
        source: the 3D DICOM volume the labels were computed on (``Volume.phase(t)`` for
            4D input); its source datasets are referenced by every frame.
        structures: label value -> coded structure; values absent from the map still get
            a segment (with no frames) so the SEG always lists the model's labels.
        algorithm_name, algorithm_version: the model name and version, recorded as the
            segments' algorithm identification.
        series_instance_uid, instance_number: to put several SEGs (one per cardiac phase)
            in one series; a new series by default.
        provenance: further Software Versions values (card digest, backend, settings:
            each at most 64 characters), so the object names what produced it.
    """
    if source.dicom is None:
        raise ValueError("the source volume was not read from DICOM")
    if (reason := seg_unavailable_reason(source)) is not None:
        raise ValueError(reason)
    if labels.shape != source.shape:
        raise ValueError(f"labels shape {labels.shape} != source grid {source.shape}")
    unknown = sorted(set(np.unique(labels).tolist()) - {0} - set(structures))
    if unknown:
        raise ValueError(f"label values {unknown} have no structure; known: {sorted(structures)}")
    numbers = segment_numbers(structures)
    segment_map = np.zeros(labels.shape, dtype=np.uint8)
    for value, number in numbers.items():
        segment_map[labels == value] = number
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name,
        version=algorithm_version,
        family=codes.cid7162.ArtificialIntelligence,
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=structures[value].label,
            segmented_property_category=structures[value].category,
            segmented_property_type=structures[value].type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[structures[value].anatomic_region]
            if structures[value].anatomic_region
            else None,
            display_color=hd.color.CIELabColor.from_rgb(*structures[value].display_rgb)
            if structures[value].display_rgb
            else None,
        )
        for value, number in numbers.items()
    ]
    datasets, frames = _frames_for_source(segment_map, source)
    seg = hd.seg.Segmentation(
        source_images=conformed(datasets, slice_thickness_mm=source.spacing[2]),
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer="sitetune",
        manufacturer_model_name=algorithm_name,
        software_versions=[
            f"sitetune {__version__}",
            f"{algorithm_name} {algorithm_version}",
            *provenance,
        ],
        device_serial_number="sitetune",
        omit_empty_frames=False,
    )
    seg.SeriesDescription = series_description or f"{algorithm_name} {algorithm_version}"
    # Validators that cannot judge "paired structure" (pixelmed) want General Series
    # Laterality unless Image Laterality is sent, and dciodvfy refuses Laterality for an
    # unpaired one: send Image Laterality, the source's, else U (unpaired: every structure
    # in `sitetune.imaging.codes` lies in the heart or the brain).
    seg.ImageLaterality = datasets[0].get("ImageLaterality") or "U"
    return seg


def write_seg(seg: hd.seg.Segmentation, path: Path | str) -> Path:
    """Save a SEG built by `segmentation_from_labels`."""
    path = Path(path)
    seg.save_as(path)
    return path
