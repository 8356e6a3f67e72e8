"""Training-time augmentation that mimics how another site's scanners and protocols differ.

A model trained at site A meets, at site B, other vendors, kernels, contrast timing,
field strengths, bias fields, noise levels and 2D thick-slice series. The recipe shows
the network those differences on the few local cases, with MONAI's dictionary
transforms on a training patch (``"image"`` ``(1, X, Y, Z)`` normalised float,
``"label"`` ``(1, X, Y, Z)`` integer labels resampled with nearest neighbour):

- ``none``: the patch as sampled;
- ``contrast`` (CT only): the patch as sampled, with the contrast enhancement varied
  (`RandContrastEnhancement`: bolus timing, dose, cardiac output);
- ``light``: small rotation and scaling, intensity scale/shift, gamma, Gaussian noise,
  and the flips the anatomy allows;
- ``site_shift`` (the fine-tune default): ``light`` with larger ranges, plus elastic
  deformation, a bias (shading) field, blur (reconstruction kernel), simulated low
  resolution and thick slices along one axis (a 2D acquisition).

For CT (``window`` normalisation) ``light`` and ``site_shift`` vary the contrast
enhancement too.

Flips only where the anatomy allows: left-right for the brain (lesions occur on both
sides), none for the heart (left and right ventricles differ). The decision follows from
the card's *coded* labels (their anatomic region), not from the model's name. Everything
random is drawn from a seed given per patch, so a training run is reproducible from its
seed (`apply_augmentation`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    MapTransform,
    OneOf,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
    Resize,
)
from pydicom.sr.codedict import codes

from sitetune.models.card import Augment, IntensityKind

if TYPE_CHECKING:
    from sitetune.models.card import ModelCard

# Anatomic regions whose left and right halves are alike enough that a mirrored case is
# still a plausible case: the brain (lesions occur on either side).
_MIRROR_SYMMETRIC = {(c.value, c.scheme_designator) for c in (codes.SCT.Brain,)}
_IMAGE, _LABEL = "image", "label"
_CROP_MARGIN = 1.25  # sampled region / patch, per axis, ahead of rotation and scaling
# Largest intensity shift and noise SD, (light, site_shift), per normalisation: window
# images lie in [0, 1] (CT: 0.05 is 40 HU of an 800 HU window), z-scored ones (MR) have
# unit variance.
_SHIFT = {IntensityKind.WINDOW.value: (0.025, 0.05), IntensityKind.ZSCORE.value: (0.1, 0.2)}
_NOISE = {IntensityKind.WINDOW.value: (0.025, 0.05), IntensityKind.ZSCORE.value: (0.05, 0.1)}


@dataclass(frozen=True)
class AugmentSpec:
    """What a training run augments: the strength and what the model's card allows.

    ``flip_axes``: the patch's spatial axes (0, 1, 2 of ``(X, Y, Z)``) that may be mirrored;
    ``intensity``: the card's normalisation (`IntensityKind` value), which sets the scale
    of intensity changes (``window``: images in [0, 1]; ``zscore``: unit variance);
    ``window``: the card's (low, high) HU window of a ``window`` card, where the contrast
    enhancement's soft-tissue knee lies.
    """

    strength: Augment = Augment.NONE
    flip_axes: tuple[int, ...] = ()
    intensity: str = IntensityKind.ZSCORE.value
    window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "strength", Augment(self.strength))
        bad = [a for a in self.flip_axes if a not in (0, 1, 2)]
        if bad:
            raise ValueError(
                f"flip_axes must be spatial axes 0, 1 or 2; got {list(self.flip_axes)}"
            )
        object.__setattr__(self, "flip_axes", tuple(int(a) for a in self.flip_axes))
        object.__setattr__(self, "intensity", IntensityKind(self.intensity).value)
        if (self.intensity == IntensityKind.WINDOW.value) != (self.window is not None):
            raise ValueError("window (low, high) is given for, and only for, window intensity")
        if self.strength is Augment.CONTRAST and self.window is None:
            raise ValueError("contrast augmentation varies CT enhancement: a window card only")

    @classmethod
    def for_card(cls, card: ModelCard, strength: Augment | str) -> AugmentSpec:
        """The spec for ``card``'s anatomy: a left-right flip only when every label lies in
        a mirror-symmetric region (the brain); none otherwise (the heart, unknown)."""
        strength = Augment(strength)
        regions = [label.code.anatomic_region for label in card.labels]
        symmetric = bool(regions) and all(
            r is not None and (r.value, r.scheme_designator) in _MIRROR_SYMMETRIC for r in regions
        )
        flips: tuple[int, ...] = ()
        if symmetric:
            axis = next(
                (i for i, code in enumerate(card.orientation.upper()) if code in "LR"), None
            )
            flips = () if axis is None else (axis,)
        intensity = card.intensity
        window = None
        if intensity.kind is IntensityKind.WINDOW:
            window = (float(intensity.low), float(intensity.high))
        return cls(strength, flips, intensity.kind.value, window)

    def crop_size(self, patch: Sequence[int]) -> tuple[int, int, int]:
        """The region to sample for one ``patch``: larger than the patch when the patch is
        rotated and scaled, so that its corners come from the image, not from padding."""
        if self.strength in (Augment.NONE, Augment.CONTRAST):
            return tuple(int(p) for p in patch)
        return tuple(math.ceil(p * _CROP_MARGIN) for p in patch)


class RandContrastEnhancement(RandomizableTransform):
    """Vary how strongly iodinated contrast enhances a window-normalised CT image: values
    above a soft-tissue knee are scaled towards it by a random factor, values below (fat,
    lung, air, unenhanced tissue) are kept. Bolus timing, dose and cardiac output move the
    blood pool between about 200 and 500 HU while fat and lung stay where they were.

    Hand-written because MONAI's intensity transforms (scale, shift, gamma, histogram
    shift) move the whole range or random control points, not the enhanced part alone.
    """

    def __init__(
        self,
        window: tuple[float, float],
        prob: float = 0.3,
        knee_hu: tuple[float, float] = (60.0, 120.0),
        factor_range: tuple[float, float] = (0.35, 1.25),
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        low, high = window
        self.knee_range = tuple((k - low) / (high - low) for k in knee_hu)
        self.factor_range = factor_range
        self.knee, self.factor = self.knee_range[0], 1.0

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.knee = float(self.R.uniform(*self.knee_range))
            self.factor = float(self.R.uniform(*self.factor_range))

    def __call__(self, img: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        above = (img - self.knee).clamp(min=0)
        return (img - above + self.factor * above).clamp(max=1.0)  # the window's top


class _DictionaryTwin(RandomizableTransform, MapTransform):
    """A dictionary transform applying one draw of ``self.inner`` (a randomizable array
    transform with ``prob`` 1) to every key, with probability ``prob``."""

    inner: RandomizableTransform

    def __init__(self, keys, prob: float, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)

    def set_random_state(self, seed: int | None = None, state=None) -> _DictionaryTwin:
        super().set_random_state(seed, state)
        self.inner.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        self.inner.randomize()
        for key in self.key_iterator(d):
            d[key] = self.inner(d[key], randomize=False)
        return d


class RandContrastEnhancementd(_DictionaryTwin):
    """Dictionary twin of `RandContrastEnhancement` (images only)."""

    def __init__(
        self, keys: Sequence[Hashable] | Hashable, window: tuple[float, float], prob: float = 0.3
    ) -> None:
        super().__init__(keys, prob)
        self.inner = RandContrastEnhancement(window, prob=1.0)


class RandThickSlices(RandomizableTransform):
    """Simulate a thick-slice (2D) acquisition along one random axis of a ``(C, X, Y, Z)``
    image: planes averaged in blocks of ``factor`` (the slice profile), then linearly
    interpolated back onto the grid, as resampling such a series onto the network grid does.

    Hand-written because MONAI's `RandSimulateLowResolution` zooms every axis by the same
    factor, while a 2D series is low-resolution along its slice axis only. The resampling
    itself is MONAI's `Resize` (``area`` down, ``trilinear`` up).
    """

    def __init__(
        self,
        prob: float = 0.1,
        factor_range: tuple[float, float] = (1.5, 5.0),
        axes: Sequence[int] = (0, 1, 2),
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if not 1.0 <= factor_range[0] <= factor_range[1]:
            raise ValueError(f"factor_range must be 1 <= low <= high; got {factor_range}")
        self.factor_range, self.axes = factor_range, tuple(axes)
        self.axis, self.factor = self.axes[0], 1.0

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.axis = int(self.R.choice(self.axes))
            self.factor = float(self.R.uniform(*self.factor_range))

    def __call__(self, img: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        shape = [int(n) for n in img.shape[1:]]
        thick = list(shape)
        thick[self.axis] = max(1, round(shape[self.axis] / self.factor))
        low = Resize(thick, mode="area")(img)
        return Resize(shape, mode="trilinear", align_corners=False)(low)


class RandThickSlicesd(_DictionaryTwin):
    """Dictionary twin of `RandThickSlices` (one draw for all ``keys``: images only)."""

    def __init__(
        self,
        keys: Sequence[Hashable] | Hashable,
        prob: float = 0.1,
        factor_range: tuple[float, float] = (1.5, 5.0),
        axes: Sequence[int] = (0, 1, 2),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.inner = RandThickSlices(1.0, factor_range, axes)


def augmentation(
    spec: AugmentSpec, patch_size: Sequence[int], device: torch.device | str | None = None
) -> Compose | None:
    """The MONAI dictionary transform for ``spec`` (None for ``none``), resampling on
    ``device`` (default: where the data lies).

    Input: ``{"image": (1, *crop), "label": (1, *crop)}`` with ``crop =
    spec.crop_size(patch_size)``; output: both ``(1, *patch_size)``, the centre of the
    (rotated, scaled) crop. Images are interpolated linearly, labels with nearest
    neighbour, both padded from the border, so image and labels stay aligned.
    """
    if spec.strength is Augment.NONE:
        return None
    if spec.strength is Augment.CONTRAST:
        return Compose([RandContrastEnhancementd(_IMAGE, spec.window, prob=0.5)])
    site = spec.strength is Augment.SITE_SHIFT
    shift, noise = _SHIFT[spec.intensity][site], _NOISE[spec.intensity][site]
    both, image = [_IMAGE, _LABEL], [_IMAGE]
    patch = tuple(int(p) for p in patch_size)
    # Exactly one spatial path per patch, each resampling once: MONAI's random spatial
    # transforms resample (identity grid) even when their draw says "do not apply".
    spatial = {
        "spatial_size": patch,
        "mode": ("bilinear", "nearest"),
        "padding_mode": "border",
        "device": None if device is None else torch.device(device),
    }
    rotate = [math.radians(15 if site else 10)] * 3
    scale = [0.15 if site else 0.1] * 3
    paths = [
        CenterSpatialCropd(both, patch),
        RandAffined(both, prob=1.0, rotate_range=rotate, scale_range=scale, **spatial),
    ]
    weights = [0.45, 0.35] if site else [0.7, 0.3]
    if site:  # displacements of about 0.5-3 voxels, with rotation and scaling
        paths.append(
            Rand3DElasticd(
                both,
                sigma_range=(5.0, 8.0),
                magnitude_range=(50.0, 150.0),
                prob=1.0,
                rotate_range=rotate,
                scale_range=scale,
                **spatial,
            )
        )
        weights.append(0.2)
    transforms: list = [OneOf(paths, weights=weights)]
    transforms += [RandFlipd(both, prob=0.5, spatial_axis=axis) for axis in spec.flip_axes]
    if spec.window is not None:
        transforms.append(RandContrastEnhancementd(image, spec.window, prob=0.3))
    if site:
        transforms.append(RandBiasFieldd(image, degree=3, coeff_range=(0.0, 0.1), prob=0.3))
    transforms += [
        RandScaleIntensityd(image, factors=0.2 if site else 0.1, prob=0.3),
        RandShiftIntensityd(image, offsets=shift, prob=0.3),
        RandAdjustContrastd(
            image, gamma=(0.7, 1.5) if site else (0.8, 1.25), retain_stats=True, prob=0.3
        ),
    ]
    if site:
        transforms += [
            RandGaussianSmoothd(
                image, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), sigma_z=(0.25, 1.0), prob=0.2
            ),
            RandSimulateLowResolutiond(
                image, zoom_range=(0.5, 1.0), prob=0.15, device=spatial["device"]
            ),
            RandThickSlicesd(image, factor_range=(1.5, 5.0), prob=0.2),
        ]
    transforms.append(RandGaussianNoised(image, std=noise, prob=0.3))
    return Compose(transforms)


def apply_augmentation(
    transform: Compose, image: torch.Tensor, labels: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment one sampled region with every random draw from ``seed``.

    ``image`` float ``(1, *crop)``, ``labels`` integer ``(1, *crop)``; returns plain tensors,
    image float32 ``(1, *patch)`` and labels int64 ``(1, *patch)`` holding only values
    present in the input labels.
    """
    transform.set_random_state(seed=int(seed) % (2**32))
    out = transform({_IMAGE: image.float(), _LABEL: labels.float()})
    augmented, label_out = _plain(out[_IMAGE]).float(), _plain(out[_LABEL])
    return augmented.contiguous(), label_out.round().to(torch.int64).contiguous()


def _plain(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    if hasattr(x, "as_tensor"):
        return x.as_tensor()
    return torch.as_tensor(x)
