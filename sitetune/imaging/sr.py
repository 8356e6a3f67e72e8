"""Measurements -> a TID 1500 Measurement Report (Comprehensive 3D SR, highdicom).

Each measurement group (TID 1411) references one segment of a DICOM SEG that sitetune
wrote, so a viewer can show the region a number was measured on; the report's evidence
lists the SEGs and the source images. Codes:

- wall thickness: DCM 122445 "Wall Thickness" in mm, derivation SCT Mean / SCT Median /
  SCT 95th percentile / SCT Maximum (sitetune's robust maximum: the 99th percentile of the
  wall, 98th of a segment; `sitetune.measure.thickness.MAX_DEFINITION`);
- per AHA segment (17-segment model): a group over the myocardium's region (the same SEG
  segment) whose finding site is the AHA segment (CID 3717 "Myocardial Wall Segments"),
  with its mean / median / max thickness (one template for every group: pixelmed's
  validator refuses TID 1501 groups among TID 1411 ones, and dcmqi reads a finding site
  per group, not per measurement);
- volumes: SCT 118565006 "Volume" in mL;
- lesion count: SCT 246206008 "Number of lesions", unit UCUM "1";
- cardiac phase: the group's finding site is the structure, and each group's tracking
  identifier names the phase; the group carries a qualitative evaluation
  SCT 246092007 "Cardiac cycle phase" = DCM 109022 End diastole / DCM 109070 End of systole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from sitetune import __version__
from sitetune.imaging.codes import StructureCode
from sitetune.imaging.derived import conformed

MILLILITRE = Code("mL", "UCUM", "milliliter")
WALL_THICKNESS = Code("122445", "DCM", "Wall Thickness")
NUMBER_OF_LESIONS = Code("246206008", "SCT", "Number of lesions")
CARDIAC_PHASE = Code("246092007", "SCT", "Cardiac cycle phase")
END_DIASTOLE = Code("109022", "DCM", "End diastole")
END_SYSTOLE = Code("109070", "DCM", "End of systole")
PHASE_CODES = {"ED": END_DIASTOLE, "ES": END_SYSTOLE}
DERIVATIONS = {
    "mean": codes.SCT.Mean,
    "median": codes.SCT.Median,
    "p95": Code("371889001", "SCT", "95th percentile"),
    "max": codes.SCT.Maximum,
}


@dataclass
class MeasurementGroup:
    """Numbers measured on one segment of one SEG (``segment_number`` is 1-based).

    ``seg`` is None when no SEG could be made (e.g. the source has no Frame of
    Reference): the group then carries its numbers without a region (TID 1501).
    """

    name: str
    seg: hd.seg.Segmentation | None
    segment_number: int
    structure: StructureCode
    volume_ml: float | None = None
    thickness_mm: dict[str, float] | None = None  # median / p95 / max
    lesion_count: int | None = None
    phase: str | None = None  # "ED" or "ES"
    has_region: bool = True  # False: the segment is empty (nothing found), no ROI to reference
    wall_segment: Code | None = None  # an AHA segment (CID 3717): the group's finding site


def _measurement(name: Code, value: float, unit: Code, derivation: Code | None = None):
    return hd.sr.Measurement(name=name, value=float(value), unit=unit, derivation=derivation)


def _group(group: MeasurementGroup, algorithm) -> object:
    measurements = []
    if group.volume_ml is not None:
        measurements.append(_measurement(codes.SCT.Volume, group.volume_ml, MILLILITRE))
    for key, value in (group.thickness_mm or {}).items():
        if key in DERIVATIONS:
            measurements.append(
                _measurement(WALL_THICKNESS, value, codes.UCUM.Millimeter, DERIVATIONS[key])
            )
    if group.lesion_count is not None:
        measurements.append(_measurement(NUMBER_OF_LESIONS, group.lesion_count, codes.UCUM.NoUnits))
    evaluations = None
    if group.phase is not None:
        evaluations = [hd.sr.QualitativeEvaluation(CARDIAC_PHASE, PHASE_CODES[group.phase])]
    tracking = hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=group.name)
    site = [hd.sr.FindingSite(group.wall_segment or group.structure.type)]
    if group.has_region and group.seg is not None:
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=group.seg.SOPClassUID,
                sop_instance_uid=group.seg.SOPInstanceUID,
                segment_number=group.segment_number,
                source_series=hd.sr.SourceSeriesForSegmentation(
                    group.seg.ReferencedSeriesSequence[0].SeriesInstanceUID
                ),
            ),
            finding_type=group.structure.type,
            finding_sites=site,
            algorithm_id=algorithm,
            measurements=measurements,
            qualitative_evaluations=evaluations,
        )
    # an empty segment (no lesion found), or no SEG at all: no region to point at (TID 1501)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        finding_type=group.structure.type,
        finding_sites=site,
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


def measurement_report(
    source_images: Sequence[Dataset],
    groups: Sequence[MeasurementGroup],
    *,
    algorithm_name: str,
    algorithm_version: str,
    procedure: Code,
    series_number: int = 901,
    series_description: str | None = None,
    provenance: Sequence[str] = (),
) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR holding a TID 1500 measurement report of ``groups``.

    Args:
        source_images: the analysed images (the SR's evidence, with the SEGs).
        groups: one TID 1411 group per measured segment.
        algorithm_name, algorithm_version: the model, recorded as the observing device
            and as each group's algorithm identification.
        procedure: the procedure reported (e.g. SCT "CT of heart").
    """
    segs = list({id(g.seg): g.seg for g in groups if g.seg is not None}.values())
    algorithm = hd.sr.AlgorithmIdentification(name=algorithm_name, version=algorithm_version)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=f"sitetune {algorithm_name}", model_name=algorithm_version
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=procedure,
        imaging_measurements=[_group(g, algorithm) for g in groups],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*conformed(source_images), *segs],
        content=report,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="sitetune",
        is_complete=True,
        software_versions=[f"sitetune {__version__}", *provenance],
    )
    sr.SeriesDescription = series_description or f"{algorithm_name} {algorithm_version} report"
    return sr
