"""Segmentation metrics on label maps (numpy, no model code).

Lesion-wise detection follows the MICCAI 2017 WMH challenge: components are
26-connected; a reference lesion is detected when any predicted voxel touches it;
precision counts predicted components that touch the reference.
"""

from __future__ import annotations

import cc3d
import numpy as np


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
