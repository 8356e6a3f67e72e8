"""Turning a continuous phantom into a scanner image: sampling, slice profile, blur,
shading and noise, per site profile. Shared by every phantom family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sitetune.imaging.phantoms.sites import Acquisition, SiteProfile

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
_SUBSLICE_MM = 1.0  # sampling step through a thick slice's profile


@dataclass(frozen=True)
class Grid:
    """A sampling grid: ``shape`` voxels, ``affine`` voxel index -> RAS+ mm."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def points(self, k_offset: float = 0.0) -> np.ndarray:
        """World mm of every voxel centre (shifted by ``k_offset`` along k), ``(X, Y, Z, 3)``."""
        i, j, k = (np.arange(n, dtype=np.float32) for n in self.shape)
        a = self.affine.astype(np.float32)
        out = np.empty((*self.shape, 3), dtype=np.float32)
        for d in range(3):
            out[..., d] = (
                a[d, 0] * i[:, None, None]
                + a[d, 1] * j[None, :, None]
                + (a[d, 2] * (k + k_offset))[None, None, :]
                + a[d, 3]
            )
        return out


def centred_grid(
    fov_mm: tuple[float, float, float],
    spacing: tuple[float, float, float],
    centre: np.ndarray,
    rotation: np.ndarray | None = None,
) -> Grid:
    """A grid covering ``fov_mm`` around ``centre`` (RAS mm), axes along ``rotation``'s columns."""
    spacing = np.asarray(spacing, dtype=np.float64)
    shape = tuple(int(np.ceil(f / s)) for f, s in zip(fov_mm, spacing, strict=True))
    rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = rot * spacing
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return Grid(shape, affine)


def random_rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """A rotation matrix of random axis and angle up to ``max_degrees``."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def smooth_field(shape: tuple[int, ...], rng: np.random.Generator, control: int = 4) -> np.ndarray:
    """A smooth random field in [-1, 1] over ``shape``, from a coarse control grid.

    Cubic interpolation up to an eighth of the resolution, then linear: smooth at the
    scale of the field, and cheap.
    """
    coarse = rng.uniform(-1.0, 1.0, size=(control,) * len(shape))
    middle = [max(control, n // 8) for n in shape]
    field = ndimage.zoom(
        coarse, [m / control for m in middle], order=3, mode="nearest", grid_mode=True
    )
    field = ndimage.zoom(
        field,
        [n / m for n, m in zip(shape, field.shape, strict=True)],
        order=1,
        mode="nearest",
        grid_mode=True,
    )
    field = field[tuple(slice(0, n) for n in shape)]
    return np.clip(field / max(np.abs(field).max(), 1e-6), -1.0, 1.0).astype(np.float32)


def shading(
    shape: tuple[int, int, int], profile: SiteProfile, rng: np.random.Generator
) -> np.ndarray | None:
    """The site's multiplicative shading field for one subject (None when the site has none)."""
    if not profile.bias:
        return None
    return 1.0 + profile.bias * smooth_field(shape, rng)


def acquire(
    render: Callable[[np.ndarray], np.ndarray],
    grid: Grid,
    profile: SiteProfile,
    rng: np.random.Generator,
    shade: np.ndarray | None = None,
) -> np.ndarray:
    """Image ``render`` (world points ``(..., 3)`` -> intensity) as ``profile``'s scanner would.

    The slice sensitivity profile is integrated by sampling through each slice, the
    in-plane point-spread function is a Gaussian, the shading field is smooth and
    multiplicative (``shade``, from `shading`, fixed per subject), and noise is Gaussian
    (CT) or Rician (MR magnitude images). Returns
    float32 ``(X, Y, Z)`` intensities before quantisation.
    """
    spacing = grid.spacing
    width = profile.slice_profile_mm
    if profile.acquisition is Acquisition.THICK_SLICE or width > spacing[2] * 1.05:
        n_sub = max(2, int(np.ceil(width / _SUBSLICE_MM)))
        offsets = (np.arange(n_sub) + 0.5) / n_sub * width - width / 2.0
        image = sum(render(grid.points(o / spacing[2])) for o in offsets) / n_sub
    else:
        image = render(grid.points())
    sigma = profile.blur_fwhm_mm * FWHM_TO_SIGMA / spacing
    if profile.acquisition is Acquisition.THICK_SLICE:
        sigma[2] = 0.0  # the slice profile already is the through-plane response
    image = ndimage.gaussian_filter(image.astype(np.float32), sigma, mode="nearest")
    if shade is not None:
        image *= shade
    if profile.family == "flair-lesion":  # magnitude MR: Rician noise
        n1 = rng.normal(0.0, profile.noise_sd, image.shape).astype(np.float32)
        n2 = rng.normal(0.0, profile.noise_sd, image.shape).astype(np.float32)
        image = np.sqrt((image + n1) ** 2 + n2**2)
    else:
        image += rng.normal(0.0, profile.noise_sd, image.shape).astype(np.float32)
    return image


def jittered(tissue: dict[str, float], jitter: float, rng: np.random.Generator) -> dict[str, float]:
    """Per-case tissue intensities: each mean scaled by a factor within +-``jitter``."""
    return {name: value * (1.0 + rng.uniform(-jitter, jitter)) for name, value in tissue.items()}
