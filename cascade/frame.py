"""One camera's search cascade: a `SearchPlan` for every video frame.

Per frame, in order:

1. **Scheduled whole-frame pass** (safety net): on the first frame and every
   `full_pass_interval_s` seconds of frame time the frame is searched as a still image is (the
   pre-filter's regions and the coarse levels), besides the tracks; spread over
   `full_pass_slices` frames, a horizontal band each.
2. **Track-guided search** (`tracks`): every live track's predicted plate, at its own scale, in a
   crop a few windows wide (`cascade.tracks`). With `sure_reading`, a track whose fused reading
   is sure is read in one view on every `sure_read_every`-th frame and only followed (box, no
   text) on the others (`cascade.tracks.read_mode`).
3. **Motion gate** (`motion`): the moving areas (`cascade.motion`), on every frame. Without motion
   and without a live track the plan is empty and the frame runs no network.
4. **Proposals for new plates** (`proposals`), on every `new_plate_every`-th frame: the pre-filter
   inside the moving areas, and the coarse levels there too; with proposals off, the moving areas
   at every plate width.

With `enabled: false` every frame gets the still image's plan, which is also the reference the
cascade is measured against (`make bench`: the same events on the bench clips).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from anprd.config.cascade import CascadeConfig
from anprd.config.detector import DetectorConfig
from anprd.types import Box
from cascade.motion import MotionGate
from cascade.plan import WHOLE_FRAME, Prefilter, Region, SearchPlan, still_plan
from cascade.tracks import TrackReading, read_mode, track_regions

__all__ = ["FrameCascade", "merge_areas", "video_prefilter"]

Box4 = tuple[float, float, float, float]
MIN_AREA_SIDE = 48.0  # px: a moving area is widened to at least this, so a HOG window fits in it
BAND_OVERLAP = 0.15  # of the frame height, each side of a band of the sliced whole-frame pass


def merge_areas(boxes: Sequence[Box4]) -> list[Box4]:
    """Overlapping boxes (x0, y0, x1, y1) replaced by their union until none overlap, so that no
    pixel is searched twice."""
    merged = [tuple(b) for b in boxes]
    changed = True
    while changed:
        changed = False
        out: list[Box4] = []
        for box in merged:
            for i, other in enumerate(out):
                if box[0] < other[2] and other[0] < box[2] and box[1] < other[3] and other[1] < box[3]:
                    out[i] = (min(box[0], other[0]), min(box[1], other[1]), max(box[2], other[2]),
                              max(box[3], other[3]))
                    changed = True
                    break
            else:
                out.append(box)  # type: ignore[arg-type]
        merged = out
    return merged  # type: ignore[return-value]


def video_prefilter(config: CascadeConfig) -> Prefilter | None:
    """The pre-filter a video's plans name (`cascade.prefilter`); None: the detector's own."""
    if not config.enabled or config.prefilter == "detector":
        return None
    return Prefilter(config.prefilter, config.prefilter_model)


class FrameCascade:
    """Plans where the detector looks in each frame of one camera. Not thread-safe: one per camera,
    called by the thread that runs that camera's pipeline.

    Parameters
    ----------
    config:
        Which stages run and their settings.
    mask:
        The camera's mask polygons as OpenCV contours (`anprd.pipeline.mask_contours`): motion
        there is ignored.
    """

    def __init__(self, config: CascadeConfig, mask: Sequence[np.ndarray] = ()) -> None:
        self.config = config
        self._mask = list(mask)
        self._gate = self._new_gate()
        self._last_full: float | None = None
        self._slice: int | None = None  # the next band of a whole-frame pass under way
        self._since_new = 0  # frames since new plates were last looked for
        self._moved: list[Box4] = []  # moving areas seen in those frames
        self.counts: dict[str, int] = {}  # frames by plan reason (bench, logs)

    def _new_gate(self) -> MotionGate:
        c = self.config
        return MotionGate(c.motion_width, c.motion_threshold, c.motion_gap_frames, c.motion_min_area,
                          self._mask)

    def set_config(self, config: CascadeConfig, mask: Sequence[np.ndarray] = ()) -> None:
        """Take new settings (a reload); the next frame gets a whole-frame pass."""
        self.config, self._mask = config, list(mask)
        self._gate = self._new_gate()
        self._last_full, self._slice = None, None

    def reset(self) -> None:
        """The source restarted or jumped: forget the motion history, search the next frame whole."""
        self._gate.reset()
        self._last_full, self._slice = None, None

    def plan(self, gray: np.ndarray, frame_time: float, predicted: Sequence[Box],
             detector: DetectorConfig, readings: Sequence[TrackReading] | None = None) -> SearchPlan:
        """The search plan for the next frame.

        gray: the frame, 8-bit grayscale. frame_time: its time in seconds (media time for a file).
        predicted: the live tracks' predicted plate boxes at `frame_time`. detector: the detector's
        settings now (plate widths, coarse-level width). readings: each of those tracks' reading so
        far (`anprd.tracker.Tracker.readings`, same order); None: every plate is read in full.
        """
        plan = self._plan(gray, frame_time, predicted, detector, readings)
        if self.prefilter is not None:
            plan = replace(plan, prefilter=self.prefilter)
        self.counts[plan.reason] = self.counts.get(plan.reason, 0) + 1
        return plan

    @property
    def prefilter(self) -> Prefilter | None:
        """The pre-filter video frames are searched with (`cascade.prefilter`; None: the detector's)."""
        return video_prefilter(self.config)

    def _plan(self, gray: np.ndarray, frame_time: float, predicted: Sequence[Box],
              detector: DetectorConfig, readings: Sequence[TrackReading] | None) -> SearchPlan:
        c = self.config
        if not c.enabled:
            return still_plan()
        height, width = gray.shape[:2]
        moving = self._gate.update(gray) if c.motion else None  # the gate sees every frame
        tracked: tuple[Region, ...] = ()
        if c.tracks and predicted:
            reads = None
            if c.sure_reading and readings is not None and len(readings) == len(predicted):
                reads = [read_mode(r, c.sure_confidence, c.sure_reads, c.sure_read_every) for r in readings]
            tracked = tuple(track_regions(predicted, (width, height), c.track_windows, c.track_scale_range,
                                          detector.min_plate_width, reads))
        due = (self._last_full is None or frame_time - self._last_full >= c.full_pass_interval_s
               or frame_time < self._last_full)  # a file replayed again, or the clock stepped back
        if due:
            self._last_full, self._slice = frame_time, 0
        if self._slice is not None:  # the whole-frame pass, one band of it per frame
            band = self._band(self._slice, c.full_pass_slices, width, height)
            self._slice = self._slice + 1 if self._slice + 1 < c.full_pass_slices else None
            self._since_new, self._moved = 0, []
            if band is None:
                return replace(still_plan(tracked), reason="scheduled")
            return SearchPlan(tracked, (band,), (band,), reason="scheduled")
        self._since_new += 1
        self._moved += moving or ()  # what moved since new plates were last looked for
        if self._since_new < c.new_plate_every:  # the tracks only, this frame
            return SearchPlan(tracked, reason="tracks" if tracked else "idle")
        if not c.motion:
            areas: list[Box4] = [WHOLE_FRAME]
        else:
            # no comparison yet (the gate's first frames, after a scheduled pass): the tracks only
            areas = merge_areas([self._padded(box, width, height) for box in self._moved])
        self._since_new, self._moved = 0, []
        if not areas:
            return SearchPlan(tracked, reason="tracks" if tracked else "idle")
        coarse = tuple(areas)
        if c.proposals:
            return SearchPlan(tracked, tuple(areas), coarse, c.proposal_threshold, reason="motion")
        widths = (detector.min_plate_width, detector.max_plate_width)
        if WHOLE_FRAME in areas:
            return SearchPlan(full_pyramid=True, reason="motion")
        return SearchPlan(tracked + tuple(Region(a, widths, 0.0, "motion") for a in areas), (), coarse,
                          reason="motion")

    @staticmethod
    def _band(index: int, slices: int, width: int, height: int) -> Box4 | None:
        """Band `index` of a whole-frame pass in `slices` bands (None: the whole frame at once).
        Bands overlap by `BAND_OVERLAP` of the frame height, so that a plate on a border, with the
        context the pre-filter's window needs, lies wholly inside one of them."""
        if slices <= 1:
            return None
        top = max(0.0, height * (index / slices - BAND_OVERLAP))
        bottom = min(float(height), height * ((index + 1) / slices + BAND_OVERLAP))
        return (0.0, top, float(width), bottom)

    def _padded(self, box: Box4, width: int, height: int) -> Box4:
        x0, y0, x1, y1 = box
        pad = self.config.motion_pad
        half_w = max((x1 - x0) * (1 + 2 * pad), MIN_AREA_SIDE) / 2
        half_h = max((y1 - y0) * (1 + 2 * pad), MIN_AREA_SIDE) / 2
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return (max(0.0, cx - half_w), max(0.0, cy - half_h), min(float(width), cx + half_w),
                min(float(height), cy + half_h))
