"""Synthetic phantoms (no patient data ships with sitetune); see DESIGN.md, "Synthetic data".

- `cardiac_phantom`: cardiac CT, 3D or 4D, labels 0/1/2 (blood pool, myocardium).
- `brain_phantom`: brain FLAIR from the MNI152 template, labels 0/1 (lesion).
- `spherical_shell`, `cylindrical_shell`, `slab`: exact-thickness label maps.
- `lv_segment_phantom`: an LV with a known wall thickness in each AHA segment (and an RV).
- `site_profile` / `SITES`: how sites A and B image the same anatomy.
- `write_msd_dataset`: N cases in Medical Segmentation Decathlon layout.
"""

from sitetune.imaging.phantoms.analytic import (
    LvSegmentPhantom,
    ThicknessPhantom,
    cylindrical_shell,
    lv_segment_phantom,
    slab,
    spherical_shell,
)
from sitetune.imaging.phantoms.brain import BrainCase, brain_phantom
from sitetune.imaging.phantoms.cardiac import CardiacCase, cardiac_phantom
from sitetune.imaging.phantoms.dataset import (
    DatasetSpec,
    ImageFormat,
    LabelPhases,
    write_msd_dataset,
)
from sitetune.imaging.phantoms.sites import SITES, Family, SiteProfile, site_profile

__all__ = [
    "SITES",
    "BrainCase",
    "CardiacCase",
    "DatasetSpec",
    "Family",
    "ImageFormat",
    "LabelPhases",
    "LvSegmentPhantom",
    "SiteProfile",
    "ThicknessPhantom",
    "brain_phantom",
    "cardiac_phantom",
    "cylindrical_shell",
    "lv_segment_phantom",
    "site_profile",
    "slab",
    "spherical_shell",
    "write_msd_dataset",
]
