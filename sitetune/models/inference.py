"""Volume in, label map out: preprocessing, sliding-window inference, postprocessing.

The label map lies on the input grid (same shape, same affine), one frame per phase for
4D input. Timings per stage are returned for the response and the metrics.
"""

from __future__ import annotations

import time

import cc3d
import numpy as np
import scipy.ndimage
import torch
from monai.inferers import sliding_window_inference

from sitetune.imaging.volume import Volume, voxel_volume_ml
from sitetune.models.card import ModelCard
from sitetune.models.engines import Engine
from sitetune.models.preprocess import (
    NetworkGrid,
    argmax_channels,
    labels_on_input_grid,
    to_network_grid,
)
from sitetune.models.serving import InferenceSettings, Segmentation

__all__ = [
    "InferenceSettings",
    "Segmentation",
    "postprocess",
    "probabilities",
    "segment",
    "segment_frame",
]
DEFAULT_SETTINGS = InferenceSettings()


def probabilities(
    engine: Engine,
    image: torch.Tensor,
    card: ModelCard,
    settings: InferenceSettings = DEFAULT_SETTINGS,
) -> torch.Tensor:
    """Softmax ``(C, X, Y, Z)`` of a normalised ``(1, X, Y, Z)`` image on the network grid."""
    with torch.inference_mode():
        logits = sliding_window_inference(
            image[None],
            roi_size=card.patch_size,
            sw_batch_size=settings.sw_batch_size,
            predictor=engine,
            overlap=settings.overlap,
            mode="gaussian",
            padding_mode="replicate",
        )
        return torch.softmax(logits[0].float(), dim=0)


def clean_components(labels: np.ndarray, card: ModelCard, voxel_ml: float) -> np.ndarray:
    """Per label, as its card entry asks: keep only the largest 26-connected component,
    and drop components smaller than ``min_component_ml``. Works inside each label's
    bounding box, so a small structure in a large volume costs little."""
    boxes = scipy.ndimage.find_objects(labels)
    for label in card.labels:
        if not (label.keep_largest_component or label.min_component_ml):
            continue
        box = boxes[label.value - 1] if label.value <= len(boxes) else None
        if box is None:
            continue
        region = labels[box]  # a view: zeroing in it zeroes in ``labels``
        components, n = cc3d.connected_components(
            region == label.value, connectivity=26, return_N=True
        )
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        sizes[0] = 0
        drop = sizes * voxel_ml < label.min_component_ml
        if label.keep_largest_component:
            drop |= np.arange(n + 1) != int(np.argmax(sizes))
        drop[0] = False
        region[drop[components]] = 0
    return labels


def postprocess(
    probs: torch.Tensor,
    grid: NetworkGrid,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    card: ModelCard,
) -> np.ndarray:
    """Softmax ``(C, X, Y, Z)`` on the network ``grid`` to a uint8 label map of ``shape``
    on the input grid ``affine``, cleaned as the card's labels ask (`clean_components`).

    Cleans on the network grid first: the foreground that survives bounds the region
    resampled onto the (often much finer) input grid; then cleans there too.
    """
    network_labels = clean_components(argmax_channels(probs), card, voxel_volume_ml(grid.affine))
    labels = labels_on_input_grid(probs, grid, affine, shape, foreground=network_labels > 0)
    return clean_components(labels, card, voxel_volume_ml(affine))


def segment_frame(
    array: np.ndarray,
    affine: np.ndarray,
    card: ModelCard,
    engine: Engine,
    settings: InferenceSettings,
    timings: dict[str, float],
) -> np.ndarray:
    """Segment one ``(X, Y, Z)`` frame; add stage times (ms) into ``timings``."""
    started = time.perf_counter()
    image, grid = to_network_grid(array, affine, card)
    t1 = time.perf_counter()
    probs = probabilities(engine, image, card, settings)
    t2 = time.perf_counter()
    labels = postprocess(probs, grid, affine, array.shape[:3], card)
    t3 = time.perf_counter()
    for stage, seconds in (
        ("preprocess", t1 - started),
        ("infer", t2 - t1),
        ("postprocess", t3 - t2),
    ):
        timings[stage] = timings.get(stage, 0.0) + 1000.0 * seconds
    return labels


def segment(
    volume: Volume,
    card: ModelCard,
    engine: Engine,
    settings: InferenceSettings = DEFAULT_SETTINGS,
) -> Segmentation:
    """Segment every phase of ``volume``; the labels lie on its grid."""
    timings: dict[str, float] = {}
    frames = [
        segment_frame(volume.phase(t).array, volume.affine, card, engine, settings, timings)
        for t in range(volume.n_phases)
    ]
    labels = frames[0] if volume.array.ndim == 3 else np.stack(frames, axis=-1)
    return Segmentation(labels, {k: round(v, 1) for k, v in timings.items()})
