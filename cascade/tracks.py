"""Track-guided search: each live track's predicted plate, looked for at its own scale nearby.

The tracker (`anprd.tracker.Tracker.predicted_boxes`) predicts where each live track's plate is in
the next frame (constant velocity). Around that box, a region a few network windows wide
(`windows`, at the scale that brings the plate into the 60-80% window band: a window is about 1.4
plate widths) is searched for plates from `width / scale_range` to `width * scale_range` wide. That
is two or three pyramid levels on a crop a few hundred pixels wide, where a whole-frame search runs
a dozen levels on the whole frame; it also finds a plate the pre-filter's template misses in this
frame, as long as its track lives.

    regions = track_regions(tracker.predicted_boxes(frame_time), (1280, 720), windows=2.5)

A track whose fused reading is sure needs its box every frame (tracking) but not its text: `read_mode`
says, from the track's reading so far (`TrackReading`), whether this frame reads it in full, in one
view, or not at all (`cascade.plan.READ_*`); the region carries that mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from anprd.types import Box
from cascade.plan import READ_FULL, READ_NONE, READ_ONE, Region

__all__ = ["TrackReading", "read_mode", "track_regions"]


@dataclass(frozen=True)
class TrackReading:
    """What a live track's reading is so far (`anprd.tracker.Tracker.readings`).

    confidence: its fused reading's confidence. reads: frames read and fused. unread: frames
    matched since its last read frame (followed by box only).
    """

    confidence: float
    reads: int
    unread: int


def read_mode(reading: TrackReading | None, sure_confidence: float, sure_reads: int, every: int) -> str:
    """How a track's plate is read in the next frame: in full until its fused reading is sure
    (`sure_confidence` over at least `sure_reads` read frames), then one view on every `every`-th
    frame and none in between (`cascade.plan.READ_*`)."""
    if reading is None or reading.confidence < sure_confidence or reading.reads < sure_reads:
        return READ_FULL
    return READ_ONE if reading.unread + 1 >= every else READ_NONE

WINDOW_PER_PLATE = 1 / 0.7  # the network's window is this many plate widths wide (plate at 70%)


def track_regions(predicted: Sequence[Box], size: tuple[int, int], windows: float = 2.5,
                  scale_range: float = 1.15, min_width: float = 1.0,
                  reads: Sequence[str] | None = None) -> list[Region]:
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
    reads:
        How each predicted plate is read (`read_mode`), in the order of `predicted`; None: in full.
    """
    width, height = size
    regions = []
    for index, box in enumerate(predicted):
        if box.x2 <= 0 or box.y2 <= 0 or box.x >= width or box.y >= height or box.w <= 0:
            continue  # a track coasting out of the frame: nothing left to look at
        plate_w = max(box.w, min_width)
        window_w = plate_w * WINDOW_PER_PLATE
        half_w = windows * window_w / 2
        half_h = max(windows / 2, 1.5) * window_w / 4
        cx, cy = box.center
        region = (max(0.0, cx - half_w), max(0.0, cy - half_h), min(float(width), cx + half_w),
                  min(float(height), cy + half_h))
        mode = reads[index] if reads is not None else READ_FULL
        regions.append(Region(region, (plate_w / scale_range, plate_w * scale_range), 1.0, "track",
                              read=mode, plate=(box.x, box.y, box.x2, box.y2)))
    return regions
