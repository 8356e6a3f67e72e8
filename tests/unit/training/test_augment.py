"""Site-shift augmentation: seeded, labels stay labels, flips only where anatomy allows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import RandFlipd

from sitetune.models.builtin import load_builtin
from sitetune.training.augment import (
    Augment,
    AugmentSpec,
    RandContrastEnhancementd,
    RandThickSlices,
    apply_augmentation,
    augmentation,
)

PATCH = (16, 16, 16)


def _card(family: str):
    return load_builtin(family)[0]


def _region(spec: AugmentSpec, values=(1, 2)) -> tuple[torch.Tensor, torch.Tensor]:
    """A crop-sized image and label map: nested blocks of ``values`` around the centre."""
    crop = spec.crop_size(PATCH)
    labels = np.zeros(crop, np.int64)
    for k, value in enumerate(values):
        inner = tuple(slice(3 + 2 * k, n - 3 - 2 * k) for n in crop)
        labels[inner] = value
    rng = np.random.default_rng(0)
    image = labels.astype(np.float32) + rng.normal(0, 0.1, crop).astype(np.float32)
    return torch.from_numpy(image)[None], torch.from_numpy(labels)[None]


def _transforms(compose) -> list:
    """Every transform in a (nested) MONAI Compose."""
    out = []
    for transform in compose.transforms:
        out.append(transform)
        if hasattr(transform, "transforms"):
            out.extend(_transforms(transform))
    return out


@pytest.mark.parametrize("family", ["lv-ct", "flair-lesion"])
@pytest.mark.parametrize("strength", ["light", "site_shift"])
def test_same_seed_same_patch_and_another_seed_another(family, strength):
    spec = AugmentSpec.for_card(_card(family), strength)
    transform = augmentation(spec, PATCH)
    image, labels = _region(spec)
    first = apply_augmentation(transform, image, labels, seed=1)
    again = apply_augmentation(transform, image, labels, seed=1)
    other = apply_augmentation(transform, image, labels, seed=2)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    assert first[0].shape == first[1].shape == (1, *PATCH)
    assert torch.equal(image, _region(spec)[0]), "the input is left as it was"


@pytest.mark.parametrize(("family", "values"), [("lv-ct", (1, 2)), ("flair-lesion", (1,))])
def test_labels_stay_integers_of_the_label_set_and_aligned_with_the_image(family, values):
    spec = AugmentSpec.for_card(_card(family), Augment.SITE_SHIFT)
    transform = augmentation(spec, PATCH)
    image, labels = _region(spec, values)
    for seed in range(24):  # every spatial path (crop, affine, elastic) is taken
        out_image, out_labels = apply_augmentation(transform, image, labels, seed)
        assert out_labels.dtype == torch.int64 and out_image.dtype == torch.float32
        assert set(out_labels.unique().tolist()) <= {0, *values}
        inside, outside = out_image[out_labels > 0], out_image[out_labels == 0]
        assert inside.mean() > outside.mean(), "image and labels moved together"


def test_flips_only_where_the_anatomy_allows():
    cardiac = AugmentSpec.for_card(_card("lv-ct"), "site_shift")
    assert cardiac.flip_axes == ()  # left and right ventricles differ
    assert not any(isinstance(t, RandFlipd) for t in _transforms(augmentation(cardiac, PATCH)))
    brain = AugmentSpec.for_card(_card("flair-lesion"), "site_shift")
    assert brain.flip_axes == (0,)  # RAS: axis 0 runs left to right
    flips = [t for t in _transforms(augmentation(brain, PATCH)) if isinstance(t, RandFlipd)]
    assert [t.flipper.spatial_axis for t in flips] == [0]
    other_grid = _card("flair-lesion").model_copy(update={"orientation": "ASL"})
    assert AugmentSpec.for_card(other_grid, "light").flip_axes == (2,)


def test_none_samples_the_patch_as_it_is():
    spec = AugmentSpec.for_card(_card("lv-ct"), "none")
    assert augmentation(spec, PATCH) is None and spec.crop_size(PATCH) == PATCH
    assert AugmentSpec.for_card(_card("lv-ct"), "light").crop_size(PATCH) == (20, 20, 20)
    with pytest.raises(ValueError):
        AugmentSpec.for_card(_card("lv-ct"), "heavy")
    with pytest.raises(ValueError, match="flip_axes"):
        AugmentSpec(Augment.LIGHT, flip_axes=(3,))


def test_thick_slices_blur_one_axis_only():
    image = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 24, 24, 24))).float()
    slices = RandThickSlices(prob=1.0, factor_range=(4.0, 4.0), axes=(2,))
    slices.set_random_state(0)
    out = slices(image)
    assert out.shape == image.shape

    def roughness(x, axis):
        return float(torch.diff(torch.as_tensor(x), dim=axis + 1).abs().mean())

    assert roughness(out, 2) < 0.5 * roughness(out, 0)  # smooth across the thick slices


def test_contrast_enhancement_moves_enhanced_tissue_only():
    """Bolus timing: the blood pool's enhancement scales, fat, lung and air stay put."""
    card = _card("lv-ct")
    spec = AugmentSpec.for_card(card, "contrast")
    assert spec.crop_size(PATCH) == PATCH  # no resampling, so no margin
    low, high = spec.window
    hu = {"air": -1000.0, "lung": -820.0, "fat": -90.0, "myocardium": 110.0, "blood": 430.0}
    tissue = {k: (min(max(v, low), high) - low) / (high - low) for k, v in hu.items()}
    image = torch.zeros((1, *PATCH))
    for k, value in enumerate(tissue.values()):
        image[0, :, :, 3 * k : 3 * k + 3] = value
    labels = torch.zeros((1, *PATCH), dtype=torch.int64)
    transform = augmentation(spec, PATCH)
    contrasts = []
    for seed in range(40):
        out, out_labels = apply_augmentation(transform, image, labels, seed)
        assert torch.equal(out_labels, labels)
        level = {k: float(out[0, 0, 0, 3 * i]) for i, k in enumerate(tissue)}
        for k in ("air", "lung", "fat"):
            assert level[k] == pytest.approx(tissue[k]), f"{k} is not enhanced"
        assert 0 <= level["blood"] <= 1
        contrasts.append((level["blood"] - level["myocardium"]) * (high - low))
    # late or weak boluses (blood ~255 HU against ~135 HU myocardium: 120 HU of contrast)
    # and the trained one (320 HU) both occur; unchanged patches too
    assert min(contrasts) < 130 and max(contrasts) > 330
    assert sum(c == pytest.approx(320, abs=0.5) for c in contrasts) > 10
    with pytest.raises(ValueError, match="window card"):
        AugmentSpec.for_card(_card("flair-lesion"), "contrast")


def test_light_and_site_shift_vary_the_enhancement_of_ct_only():
    for family, expected in (("lv-ct", True), ("flair-lesion", False)):
        for strength in ("light", "site_shift"):
            spec = AugmentSpec.for_card(_card(family), strength)
            found = any(
                isinstance(t, RandContrastEnhancementd)
                for t in _transforms(augmentation(spec, PATCH))
            )
            assert found is expected, (family, strength)
