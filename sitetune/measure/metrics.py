"""Segmentation metrics on label maps (numpy, no model code).

The lesion metrics are those of the MICCAI 2017 White Matter Hyperintensities (WMH)
challenge evaluation, computed the same way (tests compare against a SimpleITK
transcription of the challenge's script):

- **Dice** of the two binary masks.
- **HD95**: boundaries are each mask minus its in-plane erosion (3x3 square in the first
  two array axes, voxels beyond the array edge counted as foreground, like ITK's
  ``BinaryErode`` with radius (1, 1, 0)); distances between boundary voxel centres in
  world mm; the larger of the two directed 95th percentiles (linear interpolation).
- **AVD**: ``|V_pred - V_ref| / V_ref * 100``.
- **Lesion recall / precision / F1**: 26-connected components; a reference lesion is
  detected when any predicted voxel overlaps it; precision = predicted components
  overlapping the reference / all predicted components.

Empty masks (where the challenge's script divides by zero or returns NaN) are defined:

=====================  ===============  ==============  ==============
metric                 both empty       reference only  prediction only
=====================  ===============  ==============  ==============
dice                   1.0              0.0             0.0
hd95_mm                0.0              NaN             NaN
avd_pct                0.0              100.0           NaN
recall / precision     1.0 / 1.0        0.0 / 1.0       1.0 / 0.0
f1                     1.0              0.0             0.0
=====================  ===============  ==============  ==============

NaN means undefined (no boundary to measure from, or a percentage of zero); the volume
difference in mL is defined in every case. Averages over cases skip undefined values
(`mean_metrics` says how many were defined).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import cc3d
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from sitetune.imaging.volume import voxel_volume_ml

_IN_PLANE = np.ones((3, 3, 1), dtype=bool)


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    prediction, reference = prediction.astype(bool), reference.astype(bool)
    total = int(prediction.sum()) + int(reference.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(prediction, reference).sum()) / total


def dice_per_label(
    prediction: np.ndarray, reference: np.ndarray, labels: dict[int, str]
) -> dict[str, float]:
    """Dice for each ``{value: name}`` of integer label maps."""
    return {name: dice(prediction == value, reference == value) for value, name in labels.items()}


def lesion_detection(prediction: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Lesion-wise recall, precision and F1 of two binary masks (WMH definitions).

    Empty cases: no reference and no prediction gives 1.0 for all three; a prediction
    with no reference has precision 0 (recall 1, nothing to miss); a reference with no
    prediction has recall 0 (precision 1, nothing false).
    """
    prediction, reference = prediction.astype(bool), reference.astype(bool)
    ref_cc, n_ref = cc3d.connected_components(reference, connectivity=26, return_N=True)
    pred_cc, n_pred = cc3d.connected_components(prediction, connectivity=26, return_N=True)
    detected = len(np.setdiff1d(np.unique(ref_cc[prediction]), [0]))
    true_predicted = len(np.setdiff1d(np.unique(pred_cc[reference]), [0]))
    recall = detected / n_ref if n_ref else 1.0
    precision = true_predicted / n_pred if n_pred else 1.0
    f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    return {
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "reference_lesions": int(n_ref),
        "predicted_lesions": int(n_pred),
    }


def boundary(mask: np.ndarray) -> np.ndarray:
    """The WMH boundary of a binary ``(X, Y, Z)`` mask: the mask minus its erosion by a
    3x3 square in the (X, Y) plane (outside the array counts as foreground)."""
    mask = mask.astype(bool)
    return mask & ~ndimage.binary_erosion(mask, _IN_PLANE, border_value=1)


def hausdorff95(prediction: np.ndarray, reference: np.ndarray, affine: np.ndarray) -> float:
    """95th-percentile Hausdorff distance in mm between two masks on one grid.

    ``affine`` maps voxel indices to world mm; NaN when exactly one mask is empty,
    0.0 when both are.
    """
    points = []
    for mask in (prediction, reference):
        index = np.argwhere(boundary(mask)).astype(np.float64)
        points.append(index @ np.asarray(affine)[:3, :3].T)
    if len(points[0]) == 0 or len(points[1]) == 0:
        return 0.0 if len(points[0]) == len(points[1]) else math.nan
    to_reference = cKDTree(points[1]).query(points[0], k=1)[0]
    to_prediction = cKDTree(points[0]).query(points[1], k=1)[0]
    return float(max(np.percentile(to_reference, 95), np.percentile(to_prediction, 95)))


def wmh_metrics(prediction: np.ndarray, reference: np.ndarray, affine: np.ndarray) -> dict:
    """Every lesion metric of one case (binary ``(X, Y, Z)`` masks on the grid ``affine``).

    Returns ``dice``, ``hd95_mm``, ``avd_pct``, ``lesion_recall``, ``lesion_precision``,
    ``lesion_f1`` (WMH challenge definitions; empty cases in the module docstring), and
    ``volume_difference_ml`` (absolute), ``reference_ml``, ``predicted_ml``,
    ``lesion_count_difference`` (predicted minus reference, 26-connected components).
    """
    prediction, reference = prediction.astype(bool), reference.astype(bool)
    if prediction.shape != reference.shape:
        raise ValueError(f"shapes differ: prediction {prediction.shape}, {reference.shape}")
    voxel_ml = voxel_volume_ml(affine)
    n_pred, n_ref = int(prediction.sum()), int(reference.sum())
    detection = lesion_detection(prediction, reference)
    return {
        "dice": dice(prediction, reference),
        "hd95_mm": hausdorff95(prediction, reference, affine),
        "avd_pct": _avd_pct(n_pred, n_ref),
        "lesion_recall": detection["recall"],
        "lesion_precision": detection["precision"],
        "lesion_f1": detection["f1"],
        "volume_difference_ml": abs(n_pred - n_ref) * voxel_ml,
        "reference_ml": n_ref * voxel_ml,
        "predicted_ml": n_pred * voxel_ml,
        "lesion_count_difference": detection["predicted_lesions"] - detection["reference_lesions"],
    }


def _avd_pct(n_pred: int, n_ref: int) -> float:
    """Absolute volume difference in % of the reference; a percentage of an empty
    reference is defined only when the prediction is empty too (0)."""
    if n_ref == 0:
        return 0.0 if n_pred == 0 else math.nan
    return abs(n_pred - n_ref) / n_ref * 100.0


def mean_metrics(cases: Iterable[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Per metric over cases: mean and median of the defined (non-NaN) values, and how
    many cases had it defined."""
    cases = list(cases)
    out = {}
    for key in cases[0] if cases else ():
        values = np.array([case[key] for case in cases], dtype=np.float64)
        defined = values[~np.isnan(values)]
        out[key] = {
            "mean": float(defined.mean()) if defined.size else math.nan,
            "median": float(np.median(defined)) if defined.size else math.nan,
            "defined": int(defined.size),
        }
    return out
