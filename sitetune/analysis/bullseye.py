"""The AHA 17-segment bullseye (Cerqueira et al., Circulation 2002), drawn with matplotlib.

Standard layout, seen from the apex: the basal ring outermost (segments 1-6), mid (7-12),
apical (13-16), the apex (17) in the centre; anterior at the top, septum on the left,
lateral wall on the right. Each sector is filled with its value's colour (grey where a
segment has no value) and labelled with its number and value; a colour bar gives the
unit. matplotlib is imported when a plot is drawn, never by the service at start.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping

# ring: (segment ids in order, inner radius, outer radius, start angle of the first sector
# in degrees, counter-clockwise from the lateral side, i.e. 3 o'clock)
RINGS = (
    ((1, 2, 3, 4, 5, 6), 3.0, 4.0, 60.0),  # basal: 1 anterior at 60-120 degrees (the top)
    ((7, 8, 9, 10, 11, 12), 2.0, 3.0, 60.0),
    ((13, 14, 15, 16), 1.0, 2.0, 45.0),  # apical: 13 anterior at 45-135 degrees
)
NO_VALUE = "#c8c8c8"


def sector_centres() -> dict[int, tuple[float, float]]:
    """Segment id -> (angle in radians, radius) of its sector's centre (17: the centre)."""
    centres = {17: (0.0, 0.0)}
    for ids, inner, outer, start in RINGS:
        width = 360.0 / len(ids)
        for k, segment in enumerate(ids):
            angle = math.radians(start + width * (k + 0.5))
            centres[segment] = (angle, (inner + outer) / 2)
    return centres


def draw_bullseye(
    values: Mapping[int, float | None],
    *,
    title: str,
    unit: str = "mm",
    image_format: str = "png",
    value_range: tuple[float, float] | None = None,
    cmap: str = "viridis",
) -> tuple[bytes, dict[int, tuple[float, float]]]:
    """The plot of ``values`` (segment id 1..17 -> value, None for none) as PNG or SVG
    bytes, and each sector centre's pixel position (x, y from the top left) in the image."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import cm, colors
    from matplotlib.figure import Figure

    known = [v for v in values.values() if v is not None and math.isfinite(v)]
    low, high = value_range or ((min(known), max(known)) if known else (0.0, 1.0))
    if high <= low:
        low, high = low - 0.5, high + 0.5
    norm = colors.Normalize(low, high)
    colour_map = matplotlib.colormaps[cmap]

    def colour(segment: int):
        value = values.get(segment)
        if value is None or not math.isfinite(value):
            return NO_VALUE
        return colour_map(norm(value))

    figure = Figure(figsize=(5.2, 4.4), dpi=100)
    axes = figure.add_axes((0.06, 0.06, 0.66, 0.84), projection="polar")
    for ids, inner, outer, start in RINGS:
        width = 2 * math.pi / len(ids)
        for k, segment in enumerate(ids):
            angle = math.radians(start) + width * (k + 0.5)
            axes.bar(angle, outer - inner, width=width, bottom=inner, color=colour(segment),
                     edgecolor="white", linewidth=2)  # fmt: skip
    axes.bar(0.0, 1.0, width=2 * math.pi, bottom=0.0, color=colour(17), linewidth=0)
    axes.set_ylim(0, 4)
    axes.set_axis_off()
    centres = sector_centres()
    for segment, (angle, radius) in centres.items():
        value = values.get(segment)
        text = f"{segment}" if value is None else f"{segment}\n{value:.1f}"
        fill = colors.to_rgb(colour(segment))
        dark = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2] < 0.5
        axes.text(angle, radius, text, ha="center", va="center", fontsize=7,
                  color="white" if dark else "black")  # fmt: skip
    bar = figure.colorbar(cm.ScalarMappable(norm=norm, cmap=colour_map),
                          cax=figure.add_axes((0.82, 0.15, 0.04, 0.66)))  # fmt: skip
    bar.set_label(unit)
    figure.suptitle(title, fontsize=10)
    figure.text(0.39, 0.92, "anterior", ha="center", fontsize=7)
    figure.text(0.39, 0.02, "inferior", ha="center", fontsize=7)
    figure.text(0.01, 0.48, "septal", fontsize=7)
    figure.text(0.725, 0.48, "lateral", fontsize=7)
    buffer = io.BytesIO()
    figure.canvas.draw()
    height = figure.bbox.height
    pixels = {}
    for segment, (angle, radius) in centres.items():
        x, y = axes.transData.transform((angle, radius))
        pixels[segment] = (float(x), float(height - y))
    figure.savefig(buffer, format=image_format)
    return buffer.getvalue(), pixels
