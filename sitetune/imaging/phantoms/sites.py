"""Site profiles: how one hospital's scanners and protocols render the same anatomy.

Site "A" is where the base models are trained; site "B" is the shifted site a hospital
fine-tunes for. Per family the differences are deliberate and of the kinds that hurt
transfer in practice:

``lv-ct`` (cardiac CT angiography)
    A: 1.0 mm isotropic volumetric reconstruction, smooth kernel, blood pool ~430 HU
    (bolus well timed), low noise (12 HU).
    B: 0.8 x 0.8 mm in plane with 2.5 mm slices (3 mm slice profile), sharper in plane
    but thick slices, a late bolus (blood pool ~255 HU, myocardium ~135 HU, so the
    blood/muscle contrast drops from ~320 to ~120 HU), 30 HU noise and a beam-hardening
    like low-frequency shading (bias 8 %).

``flair-lesion`` (brain MRI FLAIR)
    A: 3D FLAIR, 1.2 mm isotropic, lesion/white-matter ratio 1.9, mild bias (5 %),
    noise 3 % of white matter.
    B: 2D axial FLAIR, 0.9 x 0.9 mm in plane with 5 mm slices (5 mm slice profile),
    lower lesion contrast (ratio 1.45), grey/white contrast lower, incomplete CSF
    suppression, strong bias field (30 %), noise 6 %.

Site "C" (``lv-ct`` only) is a harsher cardiac site, the one the transfer benchmark uses:
a low-dose protocol (55 HU noise), a sharp reconstruction kernel (0.5 mm in-plane
point-spread function, so the noise is not smoothed away), 0.7 x 0.7 mm in plane with
thick 3 mm slices (4 mm slice profile), an early bolus (the right heart bright at ~440 HU,
the LV blood pool only ~230 HU against ~125 HU myocardium) and 12 % shading. The field of
view and obliquity of the grid are arguments of `cardiac_phantom` (``fov_mm``,
``grid_rotation``), not of the profile, so site C keeps the default axial field of view.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Family(StrEnum):
    """The built-in model families (and so phantom families)."""

    LV_CT = "lv-ct"
    FLAIR_LESION = "flair-lesion"


class Acquisition(StrEnum):
    VOLUMETRIC = "3d"  # isotropic-ish 3D acquisition / reconstruction
    THICK_SLICE = "2d"  # 2D slices thicker than the in-plane pixels


@dataclass(frozen=True)
class SiteProfile:
    """Acquisition and contrast parameters of one site for one family.

    Intensities are HU for CT and multiples of the white-matter signal for MR.
    """

    name: str
    family: Family
    spacing_mm: tuple[float, float, float]  # (x, y, z) voxel size of the acquired grid
    acquisition: Acquisition
    slice_profile_mm: float  # full width of the slice sensitivity profile along z
    blur_fwhm_mm: float  # in-plane point-spread function (kernel / reconstruction)
    noise_sd: float  # image noise, in intensity units
    bias: float  # amplitude of the smooth multiplicative shading field
    tissue: dict[str, float]  # mean intensity per tissue class
    tissue_jitter: float  # per-case relative spread of the tissue intensities

    def describe(self) -> dict:
        """The profile as plain JSON-able values (for dataset.json and notes)."""
        return {
            "site": self.name,
            "family": str(self.family),
            "spacing_mm": list(self.spacing_mm),
            "acquisition": str(self.acquisition),
            "slice_profile_mm": self.slice_profile_mm,
            "blur_fwhm_mm": self.blur_fwhm_mm,
            "noise_sd": self.noise_sd,
            "bias": self.bias,
            "tissue": dict(self.tissue),
            "tissue_jitter": self.tissue_jitter,
        }


_CT_TISSUE_A = {
    "blood": 430.0,
    "rv_blood": 360.0,
    "myocardium": 110.0,
    "fat": -90.0,
    "lung": -820.0,
    "soft": 45.0,
    "bone": 550.0,
    "air": -1000.0,
}
_CT_TISSUE_B = {
    "blood": 255.0,
    "rv_blood": 215.0,
    "myocardium": 135.0,
    "fat": -80.0,
    "lung": -780.0,
    "soft": 50.0,
    "bone": 600.0,
    "air": -1000.0,
}
_CT_TISSUE_C = {
    "blood": 230.0,
    "rv_blood": 440.0,
    "myocardium": 125.0,
    "fat": -95.0,
    "lung": -800.0,
    "soft": 40.0,
    "bone": 650.0,
    "air": -1000.0,
}
_MR_TISSUE_A = {"wm": 1.0, "gm": 1.35, "csf": 0.22, "lesion": 1.9, "other": 0.9}
_MR_TISSUE_B = {"wm": 1.0, "gm": 1.22, "csf": 0.4, "lesion": 1.45, "other": 1.1}

SITES: dict[Family, dict[str, SiteProfile]] = {
    Family.LV_CT: {
        "A": SiteProfile(
            "A",
            Family.LV_CT,
            (1.0, 1.0, 1.0),
            Acquisition.VOLUMETRIC,
            1.0,
            1.0,
            12.0,
            0.0,
            _CT_TISSUE_A,
            0.08,
        ),
        "B": SiteProfile(
            "B",
            Family.LV_CT,
            (0.8, 0.8, 2.5),
            Acquisition.THICK_SLICE,
            3.0,
            0.8,
            30.0,
            0.08,
            _CT_TISSUE_B,
            0.12,
        ),
        "C": SiteProfile(
            "C",
            Family.LV_CT,
            (0.7, 0.7, 3.0),
            Acquisition.THICK_SLICE,
            4.0,
            0.5,
            55.0,
            0.12,
            _CT_TISSUE_C,
            0.12,
        ),
    },
    Family.FLAIR_LESION: {
        "A": SiteProfile(
            "A",
            Family.FLAIR_LESION,
            (1.2, 1.2, 1.2),
            Acquisition.VOLUMETRIC,
            1.2,
            1.2,
            0.03,
            0.05,
            _MR_TISSUE_A,
            0.05,
        ),
        "B": SiteProfile(
            "B",
            Family.FLAIR_LESION,
            (0.9, 0.9, 5.0),
            Acquisition.THICK_SLICE,
            5.0,
            1.0,
            0.06,
            0.30,
            _MR_TISSUE_B,
            0.08,
        ),
    },
}


def site_profile(family: Family | str, site: str) -> SiteProfile:
    """The profile of ``site`` for ``family``; raises ValueError naming the known ones."""
    family = Family(family)
    try:
        return SITES[family][site]
    except KeyError:
        raise ValueError(
            f"unknown site {site!r} for {family}; known: {sorted(SITES[family])}"
        ) from None
