"""Cardiac CT phantom: left ventricle with variable wall thickness, an open base, bright
distractors (right ventricle, left atrium, aorta, spine), fat and lung, over a cardiac
cycle with end-systolic thickening.

Labels: 0 background, 1 LV blood pool (papillary muscles included), 2 LV myocardium.
The LV is a truncated prolate ellipsoid: the endocardium ``(r/a)^2 + (h/c)^2 = 1`` for
``h <= 0`` (``h`` along the long axis, 0 at the base plane, apex at ``-c``); the
epicardium has an angle-dependent short-axis radius, so the wall is thicker at the
septum than at the free wall. Above the base plane there is no wall: the blood pool
opens into the left atrium and the aortic root, as at the mitral and aortic valves.
Through the cycle the cavity shrinks radially and shortens (ES at 40 % of the R-R
interval) while the muscle volume is conserved, so the wall thickens at ES (by roughly
25-45 %, as in normal hearts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sitetune.imaging.phantoms.acquisition import (
    Grid,
    acquire,
    centred_grid,
    jittered,
    random_rotation,
    shading,
)
from sitetune.imaging.phantoms.sites import Family, SiteProfile, site_profile
from sitetune.imaging.volume import PhaseInfo, Volume

FOV_MM = (128.0, 128.0, 112.0)
ES_FRACTION = 0.4  # end-systole at 40 % of the cardiac cycle; ED at 0 %
_CYCLE = ([0.0, ES_FRACTION, 0.7, 1.0], [0.0, 1.0, 0.1, 0.0])  # (phase, contraction) knots


def contraction(phase: float) -> float:
    """Contraction in [0, 1] at a cycle fraction: 0 at ED (0 %), 1 at ES (40 %)."""
    x, y = _CYCLE
    phase = phase % 1.0
    seg = int(np.searchsorted(x, phase, side="right") - 1)
    seg = min(seg, len(x) - 2)
    u = (phase - x[seg]) / (x[seg + 1] - x[seg])
    w = 0.5 - 0.5 * np.cos(np.pi * u)  # smooth between knots
    return float(y[seg] + (y[seg + 1] - y[seg]) * w)


@dataclass(frozen=True)
class LVShape:
    """One subject's LV at end-diastole (mm, RAS world)."""

    base_centre: np.ndarray
    axis: np.ndarray  # unit, apex -> base
    e1: np.ndarray  # unit, towards the septum / RV
    e2: np.ndarray
    a_in: float  # endocardial short-axis radius at the base
    c_in: float  # endocardial long semi-axis
    wall: float  # mean wall thickness
    wall_cos1: float  # relative septal thickening
    wall_cos2: float
    wall_phase2: float
    radial_shortening: float  # ES endocardial radius loss (fraction)
    long_shortening: float
    papillary: tuple[tuple[float, float], ...]  # (angle, height fraction) per muscle

    @classmethod
    def random(cls, rng: np.random.Generator, centre: np.ndarray) -> LVShape:
        axis = random_rotation(rng, 15.0) @ np.array([0.55, -0.5, 0.6])
        axis /= np.linalg.norm(axis)
        towards_rv = np.array([1.0, 0.6, 0.0])
        e1 = towards_rv - (towards_rv @ axis) * axis
        e1 /= np.linalg.norm(e1)
        hypertrophic = rng.uniform() < 0.2
        return cls(
            base_centre=centre + axis * 30.0,
            axis=axis,
            e1=e1,
            e2=np.cross(axis, e1),
            a_in=rng.uniform(19.0, 26.0),
            c_in=rng.uniform(55.0, 72.0),
            wall=rng.uniform(12.5, 16.5) if hypertrophic else rng.uniform(6.5, 11.5),
            wall_cos1=rng.uniform(0.1, 0.3),
            wall_cos2=rng.uniform(0.0, 0.12),
            wall_phase2=rng.uniform(0, 2 * np.pi),
            radial_shortening=rng.uniform(0.22, 0.38),
            long_shortening=rng.uniform(0.08, 0.16),
            papillary=((rng.uniform(2.2, 2.8), 0.45), (rng.uniform(3.6, 4.2), 0.5)),
        )

    def wall_at(self, theta: np.ndarray) -> np.ndarray:
        """ED wall thickness (mm) at angle ``theta`` around the long axis (0 = septum)."""
        return self.wall * (
            1.0
            + self.wall_cos1 * np.cos(theta)
            + self.wall_cos2 * np.cos(2 * theta + self.wall_phase2)
        )


class CardiacAnatomy:
    """The continuous phantom of one subject at one cardiac phase."""

    def __init__(self, lv: LVShape, tissue: dict[str, float], phase: float) -> None:
        self.lv, self.tissue = lv, tissue
        s = contraction(phase)
        self.a_in = lv.a_in * (1.0 - lv.radial_shortening * s)
        self.c_in = lv.c_in * (1.0 - lv.long_shortening * s)
        # Muscle volume is conserved: a shorter ventricle has more muscle per ring.
        self.ring_gain = 1.0 / (1.0 - lv.long_shortening * s)
        self.apex_wall = 0.8 * lv.wall * (1.0 + 0.3 * s)

    def _frame(self, p: np.ndarray):
        lv = self.lv
        d = p - lv.base_centre.astype(np.float32)
        h = d @ lv.axis.astype(np.float32)
        x = d @ lv.e1.astype(np.float32)
        y = d @ lv.e2.astype(np.float32)
        return h, x, y, np.sqrt(x * x + y * y), np.arctan2(y, x)

    def labels(self, p: np.ndarray) -> np.ndarray:
        """Label map 0/1/2 at world points ``p`` (``(..., 3)`` RAS mm)."""
        h, _, _, r, theta = self._frame(p)
        return self._labels(h, r, theta)

    def _labels(self, h, r, theta) -> np.ndarray:
        lv = self.lv
        ring_area = (lv.a_in + lv.wall_at(theta)) ** 2 - lv.a_in**2  # at ED, over pi
        a_out = np.sqrt(self.a_in**2 + ring_area * self.ring_gain)
        c_out = self.c_in + self.apex_wall
        below = h <= 0
        inner = (r / self.a_in) ** 2 + (h / self.c_in) ** 2 <= 1.0
        outer = (r / a_out) ** 2 + (h / c_out) ** 2 <= 1.0
        out = np.zeros(h.shape, dtype=np.uint8)
        out[below & outer] = 2
        out[below & inner] = 1
        return out

    def render(self, p: np.ndarray) -> np.ndarray:
        """CT attenuation (HU) at world points ``p``."""
        t, lv = self.tissue, self.lv
        h, x, y, r, theta = self._frame(p)
        img = np.full(h.shape, t["lung"], dtype=np.float32)
        # Mediastinum and chest wall: soft tissue around the heart, spine behind it.
        torso = (x / 75.0) ** 2 + (y / 60.0) ** 2 + ((h + 20.0) / 95.0) ** 2 <= 1.0
        img[torso] = t["soft"]
        world_y = p[..., 1] - lv.base_centre[1]
        spine = ((p[..., 0] - lv.base_centre[0] + 10.0) ** 2 + (world_y + 62.0) ** 2) <= 15.0**2
        img[spine] = t["bone"]
        # Pericardial fat envelope around both ventricles.
        mean_out = lv.a_in + lv.wall
        envelope = (r / (mean_out + 6.0)) ** 2 + (h / (self.c_in + self.apex_wall + 6.0)) ** 2 <= 1
        img[envelope & (h <= 8.0)] = t["fat"]
        # Right ventricle: a crescent on the septal side, wall then blood.
        rv_c = np.array([mean_out + 6.0, 0.0, -0.35 * lv.c_in], dtype=np.float32)
        rv = ((x - rv_c[0]) / 20.0) ** 2 + (y / 38.0) ** 2 + ((h - rv_c[2]) / 48.0) ** 2
        img[rv <= 1.25] = t["myocardium"]
        img[rv <= 1.0] = t["rv_blood"]
        # Left atrium above the base, slightly posterior; aortic root rising beside it.
        la = (x + 7.0) ** 2 + (y - 3.0) ** 2 + (h - 14.0) ** 2 <= 22.0**2
        img[la] = t["blood"]
        ao_axis_x = x - 10.0 - 0.35 * np.clip(h, 0, None)
        aorta = (ao_axis_x**2 + (y + 8.0) ** 2 <= 12.0**2) & (h > -2.0) & (h < 90.0)
        img[aorta] = t["blood"]
        # LV wall and cavity; papillary muscles inside the cavity belong to the blood pool.
        labels = self._labels(h, r, theta)
        img[labels == 2] = t["myocardium"]
        img[labels == 1] = t["blood"]
        for angle, frac in lv.papillary:
            hc = -frac * self.c_in
            px = 0.6 * self.a_in * np.cos(angle)
            py = 0.6 * self.a_in * np.sin(angle)
            muscle = ((x - px) ** 2 + (y - py) ** 2) / 16.0 + ((h - hc) / 12.0) ** 2 <= 1.0
            img[muscle & (labels == 1)] = t["myocardium"]
        return img


@dataclass
class CardiacCase:
    """A generated cardiac case: image (HU, int16-valued float32), labels, ground truth."""

    image: Volume
    labels: Volume
    ed_phase: int
    es_phase: int
    truth: dict


def cardiac_phantom(
    seed: int,
    site: str | SiteProfile = "A",
    *,
    phases: int = 1,
    grid_rotation: np.ndarray | None = None,
    spacing: tuple[float, float, float] | None = None,
    fov_mm: tuple[float, float, float] = FOV_MM,
) -> CardiacCase:
    """Generate one cardiac CT case, deterministic in ``seed``.

    Args:
        seed: the subject (anatomy, contrast, noise) -- same seed, same case.
        site: a site name of the ``lv-ct`` family or a `SiteProfile`.
        phases: number of phases evenly spread over the cycle (1 gives the ED frame).
        grid_rotation: orientation of the image axes (an oblique acquisition); axial if None.
        spacing: override the profile's voxel size (small grids for tests).
        fov_mm: field of view around the heart (larger for CCTA-sized benchmark inputs).

    Returns a `CardiacCase` whose image is ``(X, Y, Z)`` for one phase or
    ``(X, Y, Z, T)``, with phase 0 = ED and the phase nearest 40 % = ES.
    """
    profile = site if isinstance(site, SiteProfile) else site_profile(Family.LV_CT, site)
    if phases < 1:
        raise ValueError(f"phases must be >= 1, got {phases}")
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-5.0, 5.0, 3)
    lv = LVShape.random(rng, centre)
    tissue = jittered(profile.tissue, profile.tissue_jitter, rng)
    grid: Grid = centred_grid(fov_mm, spacing or profile.spacing_mm, centre, grid_rotation)
    fractions = [t / phases for t in range(phases)]
    shade = shading(grid.shape, profile, rng)
    images, labels = [], []
    for fraction in fractions:
        anatomy = CardiacAnatomy(lv, tissue, fraction)
        image = acquire(anatomy.render, grid, profile, rng, shade)
        images.append(np.clip(np.round(image), -1024, 3071).astype(np.float32))
        labels.append(anatomy.labels(grid.points()))
    es = int(np.argmin([abs(f - ES_FRACTION) for f in fractions])) if phases > 1 else 0
    infos = tuple(
        PhaseInfo(t, nominal_percentage=100.0 * f, trigger_time_ms=800.0 * f)
        for t, f in enumerate(fractions)
    )
    if phases == 1:
        image_array, label_array = images[0], labels[0]
    else:
        image_array, label_array = np.stack(images, axis=-1), np.stack(labels, axis=-1)
    image_volume = Volume(image_array, grid.affine, modality="CT", phases=infos)
    label_volume = Volume(label_array, grid.affine, modality="CT", phases=infos)
    truth = {
        "ed_wall_mm": round(float(lv.wall), 3),
        "a_in_mm": round(float(lv.a_in), 3),
        "c_in_mm": round(float(lv.c_in), 3),
        "ed_phase": 0,
        "es_phase": es,
        "site": profile.name,
        "seed": seed,
    }
    return CardiacCase(image_volume, label_volume, 0, es, truth)
