"""Brain FLAIR phantom from a real anatomical template.

Grey matter, white matter and the brain mask come from the MNI152 (ICBM 2009a,
symmetric) maps shipped inside nilearn's wheel; CSF is the part of the brain that is
neither. Each subject is the template under a random affine (rotation, anisotropic
scale, shift) and a smooth random deformation, with white-matter lesions of varied
number (including none), size and shape, placed preferentially near the ventricles as
in small-vessel disease and multiple sclerosis. The FLAIR contrast suppresses CSF, makes
grey matter brighter than white matter and lesions brightest.

Labels: 0 background, 1 lesion.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cc3d
import numpy as np
from scipy import ndimage

from sitetune.imaging.phantoms.acquisition import (
    acquire,
    centred_grid,
    jittered,
    random_rotation,
    shading,
    smooth_field,
)
from sitetune.imaging.phantoms.sites import Family, SiteProfile, site_profile
from sitetune.imaging.volume import Volume, voxel_volume_ml

FOV_MM = (200.0, 236.0, 190.0)
TEMPLATE_CENTRE = np.array([0.0, -18.0, 22.0])  # middle of the MNI152 bounding box, RAS mm
WM_SIGNAL = 400.0  # stored value of white matter; images are quantised to integers


@dataclass(frozen=True)
class Template:
    """MNI152 maps in one array ``(5, X, Y, Z)``: gm, wm, csf, non-brain head, lesions=0."""

    maps: np.ndarray  # float32 (4, X, Y, Z): gm, wm, csf, head
    affine: np.ndarray  # template voxel -> MNI RAS mm
    periventricular: np.ndarray  # float32 (X, Y, Z) weights for lesion centres


@lru_cache(maxsize=1)
def mni_template() -> Template:
    """Load (once per process) the MNI152 maps that ship with nilearn."""
    from nilearn import datasets  # heavy import, only when a brain phantom is made

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32)
    t1_data = t1.get_fdata(dtype=np.float32)
    t1_data /= max(float(np.percentile(t1_data, 99.5)), 1e-6)
    brain = ndimage.gaussian_filter(brain, 0.7)
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    head = np.clip(t1_data * (1.0 - brain), 0.0, 1.0)
    deep_wm = wm > 0.95
    distance_to_csf = ndimage.distance_transform_edt(csf < 0.5)
    periventricular = np.where(deep_wm, np.exp(-distance_to_csf / 8.0), 0.0).astype(np.float32)
    return Template(
        np.stack([gm, wm, csf, head]).astype(np.float32), t1.affine.copy(), periventricular
    )


def _lesion_map(template: Template, rng: np.random.Generator, n_lesions: int) -> np.ndarray:
    """Soft lesion occupancy in [0, 1] on the template grid (1 mm)."""
    shape = template.periventricular.shape
    lesions = np.zeros(shape, dtype=np.float32)
    weights = template.periventricular.ravel().astype(np.float64)
    weights /= weights.sum()
    centres = np.unravel_index(rng.choice(weights.size, size=n_lesions, p=weights), shape)
    for centre in zip(*centres, strict=True):
        # Mostly small lesions, a few large or confluent ones.
        radius = np.clip(rng.lognormal(np.log(3.3), 0.5), 1.5, 11.0)
        for _ in range(1 if rng.uniform() < 0.7 else rng.integers(2, 4)):
            radii = radius * rng.uniform(0.6, 1.4, 3)
            offset = np.asarray(centre) + rng.normal(0.0, radius * 0.6, 3)
            rot = random_rotation(rng, 90.0)
            half = int(np.ceil(radii.max())) + 2
            lo = np.maximum(np.round(offset).astype(int) - half, 0)
            hi = np.minimum(np.round(offset).astype(int) + half + 1, shape)
            if np.any(hi <= lo):
                continue
            idx = (
                np.stack(
                    np.meshgrid(
                        *(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij"
                    ),
                    -1,
                )
                - offset
            )
            local = idx @ rot / radii
            q = np.sqrt((local**2).sum(-1))
            soft = np.clip(0.5 - (q - 1.0) * radii.min(), 0.0, 1.0)
            box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
            lesions[box] = np.maximum(lesions[box], soft)
    return lesions * np.clip(template.maps[1] * 1.5, 0.0, 1.0)


class BrainSubject:
    """One subject: the template warped into world space, with lesions."""

    def __init__(self, rng: np.random.Generator, tissue: dict[str, float], n_lesions: int) -> None:
        self.template = mni_template()
        self.tissue = tissue
        # Interpolation is linear, so mixing the tissue maps first gives the same image.
        gm, wm, csf, head = self.template.maps
        self.signal = (
            gm * tissue["gm"] + wm * tissue["wm"] + csf * tissue["csf"] + head * tissue["other"]
        )
        self.lesions = _lesion_map(self.template, rng, n_lesions)
        scale = rng.uniform(0.92, 1.08, 3)
        self.linear = random_rotation(rng, 8.0) * scale  # template mm -> subject mm
        self.shift = rng.uniform(-5.0, 5.0, 3)
        self.warp_amplitude = rng.uniform(1.5, 3.5)
        self.rng = rng
        self._warp: tuple | None = None

    def _template_voxels(self, p: np.ndarray) -> np.ndarray:
        """Template voxel coordinates ``(3, X, Y, Z)`` of world points ``p`` ``(X, Y, Z, 3)``."""
        if self._warp is None or self._warp[0] != p.shape[:3]:
            fields = [smooth_field(p.shape[:3], self.rng) * self.warp_amplitude for _ in range(3)]
            self._warp = (p.shape[:3], fields)
        # world -> MNI mm: x_mni = L^-1 (p - c - shift) + c + warp; then MNI mm -> voxel.
        inv_template = np.linalg.inv(self.template.affine)
        m = inv_template[:3, :3] @ np.linalg.inv(self.linear)
        offset = (
            inv_template[:3, :3]
            @ (TEMPLATE_CENTRE - np.linalg.inv(self.linear) @ (TEMPLATE_CENTRE + self.shift))
            + inv_template[:3, 3]
        )
        warp = self._warp[1]
        out = np.empty((3, *p.shape[:3]), dtype=np.float32)
        for d in range(3):
            out[d] = m[d, 0] * p[..., 0] + m[d, 1] * p[..., 1] + m[d, 2] * p[..., 2] + offset[d]
            for e in range(3):
                if inv_template[d, e]:
                    out[d] += inv_template[d, e] * warp[e]
        return out

    def _sample(self, volume: np.ndarray, coords: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(volume, coords, order=1, mode="constant", cval=0.0)

    def render(self, p: np.ndarray) -> np.ndarray:
        """FLAIR signal (multiples of white matter) at world points ``p``."""
        coords = self._template_voxels(p)
        lesion = self._sample(self.lesions, coords)
        return (1.0 - lesion) * self._sample(self.signal, coords) + lesion * self.tissue["lesion"]

    def labels(self, p: np.ndarray) -> np.ndarray:
        """Lesion label (0/1) at world points ``p``."""
        return (self._sample(self.lesions, self._template_voxels(p)) >= 0.5).astype(np.uint8)


@dataclass
class BrainCase:
    """A generated FLAIR case: image (integer-valued float32), labels, ground truth."""

    image: Volume
    labels: Volume
    truth: dict


def brain_phantom(
    seed: int,
    site: str | SiteProfile = "A",
    *,
    n_lesions: int | None = None,
    grid_rotation: np.ndarray | None = None,
    spacing: tuple[float, float, float] | None = None,
) -> BrainCase:
    """Generate one brain FLAIR case, deterministic in ``seed``.

    Args:
        seed: the subject (deformation, lesions, contrast, noise).
        site: a site name of the ``flair-lesion`` family or a `SiteProfile`.
        n_lesions: lesion seeds to place (default: none for 1 case in 10, else 1-20).
        grid_rotation: orientation of the image axes; axial if None.
        spacing: override the profile's voxel size.
    """
    profile = site if isinstance(site, SiteProfile) else site_profile(Family.FLAIR_LESION, site)
    rng = np.random.default_rng(seed)
    if n_lesions is None:
        n_lesions = 0 if rng.uniform() < 0.1 else int(rng.integers(1, 21))
    tissue = jittered(profile.tissue, profile.tissue_jitter, rng)
    subject = BrainSubject(rng, tissue, n_lesions)
    centre = TEMPLATE_CENTRE + subject.shift + rng.uniform(-3.0, 3.0, 3)
    grid = centred_grid(FOV_MM, spacing or profile.spacing_mm, centre, grid_rotation)
    shade = shading(grid.shape, profile, rng)
    image = acquire(subject.render, grid, profile, rng, shade)
    image = np.clip(np.round(image * WM_SIGNAL), 0, 4095).astype(np.float32)
    labels = subject.labels(grid.points())
    components = cc3d.connected_components(labels, connectivity=26)
    voxel_ml = voxel_volume_ml(grid.affine)
    truth = {
        "lesion_count": int(components.max()),
        "lesion_volume_ml": round(float(labels.sum() * voxel_ml), 4),
        "lesion_seeds": n_lesions,
        "site": profile.name,
        "seed": seed,
    }
    return BrainCase(
        Volume(image, grid.affine, modality="MR"), Volume(labels, grid.affine, modality="MR"), truth
    )
