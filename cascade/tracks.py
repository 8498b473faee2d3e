"""Track-guided search: each live track's predicted plate, looked for at its own scale nearby.

The tracker (`anprd.tracker.Tracker.predicted_boxes`) predicts where each live track's plate is in
the next frame (constant velocity). Around that box, a region a few network windows wide
(`windows`, at the scale that brings the plate into the 60-80% window band: a window is about 1.4
plate widths) is searched for plates from `width / scale_range` to `width * scale_range` wide. That
is two or three pyramid levels on a crop a few hundred pixels wide, where a whole-frame search runs
a dozen levels on the whole frame; it also finds a plate the pre-filter's template misses in this
frame, as long as its track lives.

    regions = track_regions(tracker.predicted_boxes(frame_time), (1280, 720), windows=2.5)
"""

from __future__ import annotations

from collections.abc import Sequence

from anprd.types import Box
from cascade.plan import Region

__all__ = ["track_regions"]

WINDOW_PER_PLATE = 1 / 0.7  # the network's window is this many plate widths wide (plate at 70%)


def track_regions(predicted: Sequence[Box], size: tuple[int, int], windows: float = 2.5,
                  scale_range: float = 1.15, min_width: float = 1.0) -> list[Region]:
    """Search regions (`cascade.plan.Region`, source "track") around predicted plate boxes.

    Parameters
    ----------
    predicted:
        Predicted plate boxes in frame pixels.
    size:
        Frame (width, height); regions are clipped to it, and boxes wholly outside are skipped.
    windows:
        Region width in network windows at the plate's scale; its height is half that in windows
        (a window is twice as wide as it is tall) but at least one and a half windows.
    scale_range:
        Plate widths searched: predicted width / scale_range to width * scale_range.
    min_width:
        Plates narrower than this are looked for at this width (the detector's narrowest).
    """
    width, height = size
    regions = []
    for box in predicted:
        if box.x2 <= 0 or box.y2 <= 0 or box.x >= width or box.y >= height or box.w <= 0:
            continue  # a track coasting out of the frame: nothing left to look at
        plate_w = max(box.w, min_width)
        window_w = plate_w * WINDOW_PER_PLATE
        half_w = windows * window_w / 2
        half_h = max(windows / 2, 1.5) * window_w / 4
        cx, cy = box.center
        region = (max(0.0, cx - half_w), max(0.0, cy - half_h), min(float(width), cx + half_w),
                  min(float(height), cy + half_h))
        regions.append(Region(region, (plate_w / scale_range, plate_w * scale_range), 1.0, "track"))
    return regions
