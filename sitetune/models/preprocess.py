"""Between an input's grid and the network's grid, both ways (MONAI transforms).

Forward: reorient to the card's axis codes and resample onto world-aligned axes at the
card's spacing (trilinear for images, nearest for labels), normalise the intensity.
Back: class probabilities are resampled from the network grid onto the input grid with
the two affines (trilinear), so the label map that follows lies voxel for voxel on the
input grid, whatever its orientation or spacing. Training and serving share
these functions, so a model sees the same preprocessing in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import NormalizeIntensity, Orientation, Spacing, SpatialResample

from sitetune.models.card import IntensityKind, ModelCard

_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass(frozen=True)
class NetworkGrid:
    """The grid the network runs on: ``affine`` voxel -> RAS mm, ``shape`` voxels."""

    affine: np.ndarray
    shape: tuple[int, int, int]


def _resample(
    array: np.ndarray | torch.Tensor, affine: np.ndarray, card: ModelCard, mode: str
) -> MetaTensor:
    data = torch.as_tensor(np.ascontiguousarray(array) if isinstance(array, np.ndarray) else array)
    image = MetaTensor(data[None].float(), affine=torch.as_tensor(affine, dtype=torch.float64))
    image = Orientation(axcodes=card.orientation, labels=_RAS_LABELS)(image)
    # diagonal=True: oblique acquisitions are resampled onto world-aligned axes, so the
    # network always sees anatomy the way it was trained.
    return Spacing(
        pixdim=card.spacing_mm, mode=mode, padding_mode="border", diagonal=True, dtype=torch.float32
    )(image)


def normalise(image: torch.Tensor, card: ModelCard) -> torch.Tensor:
    """Intensity normalisation of the card, on a ``(1, X, Y, Z)`` image."""
    intensity = card.intensity
    if intensity.kind is IntensityKind.WINDOW:
        image = image.clamp(intensity.low, intensity.high)
        return (image - intensity.low) / (intensity.high - intensity.low)
    return NormalizeIntensity(nonzero=True)(image)


def to_network_grid(
    array: np.ndarray, affine: np.ndarray, card: ModelCard
) -> tuple[torch.Tensor, NetworkGrid]:
    """An ``(X, Y, Z)`` image on ``affine`` -> normalised ``(1, X', Y', Z')`` on the card's grid."""
    image = _resample(array, affine, card, "bilinear")
    grid = NetworkGrid(image.affine.numpy().astype(np.float64), tuple(image.shape[1:]))
    return normalise(image.as_tensor(), card).contiguous(), grid


def labels_to_network_grid(labels: np.ndarray, affine: np.ndarray, card: ModelCard) -> np.ndarray:
    """An ``(X, Y, Z)`` label map -> the card's grid (nearest neighbour), uint8."""
    resampled = _resample(labels.astype(np.float32), affine, card, "nearest")
    return resampled.as_tensor()[0].round().to(torch.uint8).numpy()


def to_input_grid(
    probabilities: torch.Tensor, grid: NetworkGrid, affine: np.ndarray, shape: tuple[int, int, int]
) -> torch.Tensor:
    """``(C, X', Y', Z')`` probabilities on ``grid`` -> ``(C, X, Y, Z)`` on the input grid."""
    plain = probabilities.as_tensor() if isinstance(probabilities, MetaTensor) else probabilities
    source = MetaTensor(plain.float(), affine=torch.as_tensor(grid.affine))
    out = SpatialResample(mode="bilinear", padding_mode="border", dtype=torch.float32)(
        source, dst_affine=torch.as_tensor(affine, dtype=torch.float64), spatial_size=shape
    )
    return out.as_tensor()


def labels_on_input_grid(
    probabilities: torch.Tensor,
    grid: NetworkGrid,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    foreground: np.ndarray | None = None,
    margin: int = 2,
) -> np.ndarray:
    """Argmax of ``(C, X', Y', Z')`` softmax probabilities resampled onto the input grid.

    Only input voxels within reach of ``foreground`` (a network-grid mask; default: where
    the background probability is below 0.5), plus ``margin`` network voxels, are
    resampled: elsewhere every neighbour is background-dominated, so the interpolated
    argmax is background anyway. Background is not resampled but derived as one minus
    the other channels (interpolation is linear). Returns uint8 ``shape``.
    """
    labels = np.zeros(shape, dtype=np.uint8)
    if foreground is None:
        foreground = (probabilities[0] < 0.5).numpy()
    where = np.argwhere(foreground)
    if where.size == 0:
        return labels
    lo = np.maximum(where.min(0) - margin, 0)
    hi = np.minimum(where.max(0) + margin, np.asarray(grid.shape) - 1)
    corners = np.array(
        [[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )
    to_input = np.linalg.inv(affine) @ grid.affine
    mapped = (corners @ to_input.T)[:, :3]
    start = np.clip(np.floor(mapped.min(0)).astype(int) - 1, 0, np.asarray(shape))
    stop = np.clip(np.ceil(mapped.max(0)).astype(int) + 2, 0, np.asarray(shape))
    if np.any(stop <= start):
        return labels
    offset = np.eye(4)
    offset[:3, 3] = start
    box = tuple(int(b - a) for a, b in zip(start, stop, strict=True))
    resampled = to_input_grid(probabilities[1:], grid, affine @ offset, box)
    background = 1.0 - resampled.sum(0, keepdim=True)
    labels[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] = argmax_channels(
        torch.cat([background, resampled])
    )
    return labels


def argmax_channels(scores: torch.Tensor) -> np.ndarray:
    """``argmax`` over the channel axis of ``(C, X, Y, Z)``, uint8 (first maximum wins).

    One comparison pass per channel: torch's reduction over the outermost axis is an order
    of magnitude slower on CPU for the few channels segmentation has.
    """
    best = scores[0].clone()
    labels = torch.zeros(scores.shape[1:], dtype=torch.uint8)
    for channel in range(1, scores.shape[0]):
        better = scores[channel] > best
        labels[better] = channel
        best = torch.maximum(best, scores[channel])
    return labels.numpy()
