"""Clean an LV label map before its wall is measured: the mistakes of a segmentation
network that no surface placement can undo, and that would otherwise set the maximum.

On one 3D frame (1 = blood pool, 2 = myocardium, `sitetune.measure.labels`):

- a myocardium component that does not join the cavity to the outside is not wall: one
  touching only the blood pool (a blob inside the cavity the network called myocardium)
  becomes blood pool; one away from the cavity (a fragment elsewhere) becomes background;
- a blood-pool component touching no myocardium becomes background;
- holes (background enclosed by blood pool and myocardium) are filled: with blood pool
  where they touch the blood pool, with myocardium otherwise.

`clean_lv` returns the cleaned map and what it changed (voxels and mL per kind), which
the thickness report carries (``method.cleanup``). Connected components by
``connected-components-3d`` and holes by ``fill-voids`` (DESIGN.md); hand-written is only
the rule deciding what each component is.
"""

from __future__ import annotations

import cc3d
import fill_voids
import numpy as np
from scipy import ndimage

from sitetune.measure.labels import BLOOD_POOL, MYOCARDIUM
from sitetune.measure.thickness import bounding_box

_FACE = ndimage.generate_binary_structure(3, 1)


def _touching(components: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Ids of ``components`` with a voxel face-adjacent to (or in) ``mask``."""
    near = ndimage.binary_dilation(mask, _FACE)
    return np.unique(components[near & (components > 0)])


def clean_lv(labels: np.ndarray, voxel_ml: float) -> tuple[np.ndarray, dict]:
    """The cleaned copy of a 3D LV label map, and ``{kind: {"voxels", "ml"}}`` of what
    changed (see the module docstring)."""
    if labels.ndim != 3:
        raise ValueError(f"need a 3D label map, got shape {labels.shape}")
    out = np.array(labels, copy=True)
    changed = {
        "myocardium_in_cavity": 0,  # -> blood pool
        "myocardium_fragments": 0,  # -> background
        "blood_pool_fragments": 0,  # -> background
        "holes_filled": 0,  # -> blood pool or myocardium
    }
    present = (out == BLOOD_POOL).any() and (out == MYOCARDIUM).any()
    lv = (out == BLOOD_POOL) | (out == MYOCARDIUM)
    box = bounding_box(lv, margin=2) if present else None
    if box is not None:  # a frame lacking either label is left for the measurement to refuse
        sub = out[box]  # a view: cleaned in place
        myocardium = sub == MYOCARDIUM
        components = cc3d.connected_components(myocardium, connectivity=26)
        if components.max() > 0:
            to_cavity = _touching(components, sub == BLOOD_POOL)
            to_outside = _touching(components, sub == 0)
            wall = np.intersect1d(to_cavity, to_outside)
            inside = np.setdiff1d(to_cavity, wall)
            in_cavity = np.isin(components, inside)
            fragments = (components > 0) & ~np.isin(components, wall) & ~in_cavity
            sub[in_cavity] = BLOOD_POOL
            sub[fragments] = 0
            changed["myocardium_in_cavity"] = int(in_cavity.sum())
            changed["myocardium_fragments"] = int(fragments.sum())
        pools = cc3d.connected_components(sub == BLOOD_POOL, connectivity=26)
        if pools.max() > 0:
            kept = _touching(pools, sub == MYOCARDIUM)
            stray = (pools > 0) & ~np.isin(pools, kept)
            sub[stray] = 0
            changed["blood_pool_fragments"] = int(stray.sum())
        lv = (sub == BLOOD_POOL) | (sub == MYOCARDIUM)
        holes = fill_voids.fill(lv, in_place=False) & ~lv
        if holes.any():
            pieces = cc3d.connected_components(holes, connectivity=6)
            to_blood = np.isin(pieces, _touching(pieces, sub == BLOOD_POOL)) & holes
            sub[to_blood] = BLOOD_POOL
            sub[holes & ~to_blood] = MYOCARDIUM
            changed["holes_filled"] = int(holes.sum())
    report = {k: {"voxels": v, "ml": round(v * voxel_ml, 3)} for k, v in changed.items()}
    return out, report
