"""The AHA bullseye: 17 filled sectors in the standard layout, each its value's colour."""

from __future__ import annotations

import io

import numpy as np
from matplotlib import image

from sitetune.analysis.bullseye import NO_VALUE, draw_bullseye, sector_centres


def test_seventeen_sectors_each_filled_with_its_values_colour():
    values = {segment: float(segment) for segment in range(1, 18)}
    values[5] = None  # a segment without a value is grey
    png, pixels = draw_bullseye(values, title="ED wall thickness")
    picture = image.imread(io.BytesIO(png))[..., :3]
    assert picture.shape[0] > 300 and picture.shape[1] > 300
    seen = {}
    for segment, (x, y) in pixels.items():
        # a little off the centre, beside the label text
        patch = picture[int(y) + 6 : int(y) + 9, int(x) - 14 : int(x) - 11].reshape(-1, 3)
        seen[segment] = tuple(np.round(np.median(patch, axis=0), 2))
    white = (1.0, 1.0, 1.0)
    assert all(colour != white for colour in seen.values()), "every sector is filled"
    grey = tuple(round(int(NO_VALUE[i : i + 2], 16) / 255, 2) for i in (1, 3, 5))
    assert np.allclose(seen[5], grey, atol=0.02)
    filled = [seen[s] for s in range(1, 18) if s != 5]
    assert len(set(filled)) == 16, "distinct values, distinct colours"


def test_the_layout_is_the_standard_one():
    centres = sector_centres()
    assert len(centres) == 17 and centres[17][1] == 0
    angle = {s: np.degrees(a) % 360 for s, (a, _) in centres.items()}
    assert abs(angle[1] - 90) < 1 and abs(angle[7] - 90) < 1 and abs(angle[13] - 90) < 1
    assert abs(angle[2] - 150) < 1 and abs(angle[14] - 180) < 1  # septum on the left
    assert abs(angle[4] - 270) < 1 and abs(angle[15] - 270) < 1  # inferior at the bottom
    rings = sorted({r for _, r in centres.values()})
    assert rings == [0.0, 1.5, 2.5, 3.5], "apex, apical, mid, basal from the centre out"


def test_svg_too():
    svg, _ = draw_bullseye({1: 10.0}, title="t", image_format="svg")
    assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg
