"""Multi-plate tracker: links per-frame detections into tracks and fuses their readings.

Shape after norfair: plain `Detection`/`Track` data, one `Tracker.update()` entry point, an
injected motion filter, ids per tracker instance. Each frame:

1. every live track's box is predicted at the frame time (constant velocity, alpha-beta filter);
2. the cost of pairing track i with detection j is
   ``iou_weight * (1 - IoU) + distance_weight * d / max_center_distance + text_weight * e``, with d
   the centre distance in box sizes and e the normalised edit distance between the detection's
   text and the track's texts (fused, and latest read with at least `text_min_confidence`; only
   a detection read that well is compared);
   pairs beyond the distance, size (`max_size_ratio`) or text gate are impossible;
3. confirmed tracks are assigned first (`scipy.optimize.linear_sum_assignment`), then tentative
   ones, so a one-frame false positive cannot steal a real plate;
4. a track's text is the CTC fusion of its frames (`anprd.ctc_fusion.CandidateFusion`);
5. a detection left unmatched that lies on a plate matched in this frame (`duplicate_overlap`), or
   on the predicted box of a confirmed plate missed in this frame, is a second reading of that
   plate and starts no track (a plate's box counts with the text lines just above and below it,
   `PLATE_LINE_MARGIN`); a track whose matches mostly lay on a
   larger plate matched in the same frame (a US state name tracked before its plate was found)
   is a fragment of it and is not reported, and so is an older track at most half the plate's
   height (`TEXT_LINE_MAX_HEIGHT`) lying on a plate when that plate's track is confirmed, if that
   track is a plate (the name was found whole while its plate was still entering the image).

Lifetime rules:

- a track is *confirmed* after `min_frames` matches; shorter tracks end silently;
- it *ends* after more than `max_misses` missed frames or `max_gap_s` seconds without a match
  (short occlusions are survived; `expire` applies the seconds while a dropped camera sends no
  frames), and a confirmed track whose fused plate has at least
  `min_plate_length` characters, and one of whose frames was read with at least
  `text_min_confidence`, is then reported;
- at `max_age_s` it is reported and ends, and a *continuation* track takes over its motion state
  at once. A continuation remembers the plates already reported on its line and reports only a
  plate that differs from all of them by more than `same_plate_max_text_distance`: a car parked
  in view for minutes gives one event, a different car taking its place still gives its own;
- a track whose plate was reported by another track of this camera that was last seen at most
  `same_plate_window_s` before it started is the same passage (its track broke) and is not
  reported again; the passage then runs to the end of this piece, so a stopped car found on and
  off gives one event however long it stands;
- optionally, a *provisional* report is made once a confirmed track has
  `provisional_after_frames` matches.

A detection that carries no reading (no text, no candidates, no posteriors: the search cascade
followed a sure track's box without reading it, `cascade.plan.READ_NONE`) is a match like any
other, for the box, the motion, `frames_seen` and the lifetime rules, but adds nothing to the fused
reading: the track's text, confidence and candidates are those of the frames that were read.
`Tracker.readings` says how sure each live track's reading is, for the cascade to decide.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment

from anprd.config.tracker import TrackerConfig
from anprd.ctc import edit_distance
from anprd.ctc_fusion import CandidateFusion, FusedReading, carries_reading
from anprd.types import Box, Detection, Track
from cascade.tracks import TrackReading

if TYPE_CHECKING:
    from anprd.formats import CountryPrior, FormatPrior

__all__ = [
    "AlphaBetaFilter",
    "EndReason",
    "MotionFilter",
    "MotionFilterFactory",
    "StaticFilter",
    "TrackReport",
    "Tracker",
    "TrackerUpdate",
    "alpha_beta_factory",
    "normalized_edit_distance",
]

_MIN_SIDE = 1.0  # pixels; predicted boxes never shrink below this
_IMPOSSIBLE = 1e9  # cost of a gated pair (linear_sum_assignment needs finite costs)


class EndReason(StrEnum):
    """Why a track ended."""

    LOST = "lost"
    MAX_AGE = "max_age"
    FLUSHED = "flushed"


class MotionFilter(Protocol):
    """Follows one track's box over time."""

    def predict(self, time: float) -> Box:
        """The box expected at `time`, without changing the state."""
        ...

    def update(self, box: Box, time: float) -> None:
        """Take a measured box at `time`."""
        ...


MotionFilterFactory = Callable[[Box, float], MotionFilter]
"""Builds a filter from a track's first box and time."""


def _box_state(box: Box) -> np.ndarray:
    cx, cy = box.center
    return np.array([cx, cy, box.w, box.h], dtype=np.float64)


def _state_box(state: np.ndarray) -> Box:
    cx, cy, w, h = (float(v) for v in state)
    w, h = max(w, _MIN_SIDE), max(h, _MIN_SIDE)
    return Box(cx - w / 2, cy - h / 2, w, h)


class AlphaBetaFilter:
    """Constant-velocity alpha-beta filter on (centre x, centre y, width, height).

    The velocity is set from the first two measurements, then corrected by `beta` times the
    residual per second; the position moves `alpha` of the way to each measurement.
    """

    def __init__(self, box: Box, time: float, *, alpha: float = 0.7, beta: float = 0.3) -> None:
        if not 0 < alpha <= 1 or not 0 <= beta <= 1:
            raise ValueError(f"need 0 < alpha <= 1 and 0 <= beta <= 1, got {alpha}, {beta}")
        self._alpha = alpha
        self._beta = beta
        self._state = _box_state(box)
        self._velocity = np.zeros(4)
        self._time = time
        self._updates = 1

    def predict(self, time: float) -> Box:
        dt = max(0.0, time - self._time)
        return _state_box(self._state + self._velocity * dt)

    def update(self, box: Box, time: float) -> None:
        dt = max(0.0, time - self._time)
        measured = _box_state(box)
        if dt == 0.0:  # same instant: nothing to say about velocity
            self._state += self._alpha * (measured - self._state)
            return
        if self._updates == 1:
            self._velocity = (measured - self._state) / dt
            self._state = measured
        else:
            predicted = self._state + self._velocity * dt
            residual = measured - predicted
            self._state = predicted + self._alpha * residual
            self._velocity = self._velocity + (self._beta / dt) * residual
        self._time = time
        self._updates += 1


class StaticFilter:
    """No motion model: predicts the last measured box."""

    def __init__(self, box: Box, time: float) -> None:
        self._box = box

    def predict(self, time: float) -> Box:
        return self._box

    def update(self, box: Box, time: float) -> None:
        self._box = box


def alpha_beta_factory(alpha: float, beta: float) -> MotionFilterFactory:
    """A `MotionFilterFactory` making `AlphaBetaFilter`s with these gains."""

    def make(box: Box, time: float) -> MotionFilter:
        return AlphaBetaFilter(box, time, alpha=alpha, beta=beta)

    return make


# A plate's box as found can sit a fraction of its height off the plate (measured on clip 2: the box
# of a US plate started below the state name printed above its characters), and US plates carry a
# state name or slogan just above or below the registration: that band belongs to the plate too.
PLATE_LINE_MARGIN = 0.25  # plate heights added above and below a plate's box
# A line of a plate's text (state name, dealer) is well under half as tall as the plate's box; a
# track as tall as the plate lying on it is another plate's (or the same plate's) track.
TEXT_LINE_MAX_HEIGHT = 0.5


def _with_text_lines(box: Box) -> Box:
    """`box` grown by `PLATE_LINE_MARGIN` of its height above and below."""
    return Box(box.x, box.y - PLATE_LINE_MARGIN * box.h, box.w, box.h * (1 + 2 * PLATE_LINE_MARGIN))


def _overlap_of_smaller(first: Box, second: Box) -> float:
    """Intersection area over the smaller box's area (1 when one box lies inside the other)."""
    return first.intersection_area(second) / max(min(first.w * first.h, second.w * second.h), 1e-9)


def normalized_edit_distance(first: str, second: str) -> float:
    """Levenshtein distance divided by the longer length, in [0, 1]; 0 for two empty strings."""
    if first == second:
        return 0.0
    return edit_distance(first, second) / max(len(first), len(second))


@dataclass(frozen=True)
class TrackReport:
    """A track at a transition, with its fused reading.

    track: a snapshot (later frames do not change it); pattern: the most common non-None plate
    pattern among the detections that read the fused text; end_reason: set for ended tracks;
    continuation_of: the id of the track this one took over from at `max_age_s`, if any.
    """

    track: Track
    reading: FusedReading
    pattern: str | None
    end_reason: EndReason | None = None
    continuation_of: int | None = None


@dataclass(frozen=True)
class TrackerUpdate:
    """What one `Tracker.update()` changed.

    tracks: live confirmed tracks; tentative: live tracks not yet confirmed; confirmed: tracks
    confirmed this frame; provisional: tracks due a provisional event this frame; ended: tracks
    that ended this frame and are due a final event; suppressed: confirmed tracks that ended
    without an event (plate unreadable, or already reported by the track they continue).
    """

    frame_time: float
    frame_number: int
    tracks: tuple[Track, ...] = ()
    tentative: tuple[Track, ...] = ()
    confirmed: tuple[TrackReport, ...] = ()
    provisional: tuple[TrackReport, ...] = ()
    ended: tuple[TrackReport, ...] = ()
    suppressed: tuple[TrackReport, ...] = ()


@dataclass
class _TrackState:
    """Tracker-private state of one live track."""

    track: Track
    motion: MotionFilter
    fusion: CandidateFusion
    last_match_time: float
    last_text: str = ""
    confirmed: bool = False
    provisional_done: bool = False
    reported_texts: tuple[str, ...] = ()
    continuation_of: int | None = None
    patterns: dict[str, Counter[str]] = field(default_factory=dict)
    fragment_frames: int = 0  # matches that lay on a larger plate matched in the same frame
    reads: int = 0  # matches that carried a reading (fused)
    unread: int = 0  # matches since the last one that carried a reading
    # the plate this track was found to be a line of when that plate's track was confirmed
    text_line_of: _TrackState | None = None

    def texts(self) -> tuple[str, ...]:
        """The texts a new detection is compared with: fused and last read."""
        return tuple(t for t in dict.fromkeys((self.fusion.reading().text, self.last_text)) if t)

    def pattern(self, text: str) -> str | None:
        counts = self.patterns.get(text)
        return counts.most_common(1)[0][0] if counts else None


class Tracker:
    """Tracks plates of one camera across frames.

    Parameters
    ----------
    config
        Gates, weights and lifetime rules.
    camera_id
        Stamped on every track.
    motion_filter_factory
        Builds each track's motion filter; default: `AlphaBetaFilter` with the config's gains.
    prior
        Returns the detector's country formats, its model's own format counts (or None): fused
        readings are fitted to them too.
    """

    def __init__(
        self,
        config: TrackerConfig,
        camera_id: str = "default",
        *,
        motion_filter_factory: MotionFilterFactory | None = None,
        prior: Callable[[], CountryPrior | FormatPrior | None] | None = None,
    ) -> None:
        self._config = config
        self._camera_id = camera_id
        self._prior = prior
        self._make_filter = motion_filter_factory or alpha_beta_factory(
            config.motion_alpha, config.motion_beta
        )
        self._ids = itertools.count(1)
        self._states: list[_TrackState] = []
        # (plate, last_seen) of recent events, for `same_plate_window_s`.
        self._recent_plates: deque[tuple[str, float]] = deque()

    @property
    def config(self) -> TrackerConfig:
        return self._config

    @property
    def live_tracks(self) -> tuple[Track, ...]:
        """All live tracks, confirmed or not."""
        return tuple(state.track for state in self._states)

    def predicted_boxes(self, frame_time: float) -> tuple[Box, ...]:
        """Where each live track's plate is expected at `frame_time`, as `update` predicts it
        (the search cascade looks there first); asking changes nothing."""
        return tuple(state.motion.predict(frame_time) for state in self._states)

    def readings(self) -> tuple[TrackReading, ...]:
        """Each live track's reading so far, in the order of `predicted_boxes`: its fused
        confidence, the frames read and the frames followed unread since the last read (the
        search cascade reads a sure track's plate less often)."""
        return tuple(TrackReading(state.fusion.reading().confidence, state.reads, state.unread)
                     for state in self._states)

    def update(
        self, detections: Sequence[Detection], frame_time: float, frame_number: int
    ) -> TrackerUpdate:
        """Take one frame's detections and return the live tracks and this frame's transitions."""
        if not math.isfinite(frame_time):
            raise ValueError(f"frame_time must be finite, got {frame_time}")
        config = self._config
        predicted = [state.motion.predict(frame_time) for state in self._states]

        confirmed_rows = [i for i, s in enumerate(self._states) if s.confirmed]
        tentative_rows = [i for i, s in enumerate(self._states) if not s.confirmed]
        free = list(range(len(detections)))
        pairs: list[tuple[int, int]] = []
        for rows in (confirmed_rows, tentative_rows):
            matched = self._associate(rows, predicted, detections, free)
            pairs.extend(matched)
            taken = {column for _, column in matched}
            free = [column for column in free if column not in taken]

        # Plates do not overlap: a matched box lying on a larger matched box is part of that plate
        # (a US state name, half a plate), whichever track it was matched to, if that box was read
        # as a plate: a large box read as junk over a stopped car made its plate a fragment (the
        # bundled clip's DMUHU759 once the pre-filter proposed more regions). A plate followed unread
        # counts as read as well as its track's fused reading is.
        matched_boxes = [detections[column].box for _, column in pairs]
        read_boxes = [detections[column].box for row, column in pairs
                      if detections[column].confidence >= config.text_min_confidence
                      or (not carries_reading(detections[column])
                          and self._states[row].fusion.reading().confidence >= config.text_min_confidence)]
        for row, column in pairs:
            if self._lies_on_larger(detections[column].box, read_boxes):
                self._states[row].fragment_frames += 1

        confirmed: list[TrackReport] = []
        provisional: list[TrackReport] = []
        ended: list[TrackReport] = []
        suppressed: list[TrackReport] = []
        matched_rows = {row for row, _ in pairs}
        now_confirmed: list[_TrackState] = []
        for row, column in pairs:
            state = self._states[row]
            self._match(state, detections[column], frame_time, frame_number)
            if not state.confirmed and state.track.frames_seen >= config.min_frames:
                state.confirmed = True
                confirmed.append(self._report(state))
                now_confirmed.append(state)
            if self._due_provisional(state):
                provisional.append(self._report(state))
        where = {id(state): state.track.box if row in matched_rows else predicted[row]
                 for row, state in enumerate(self._states)}
        for plate in now_confirmed:
            self._absorb_earlier_text_lines(plate, where)

        survivors: list[_TrackState] = []
        coasting_boxes: list[Box] = []  # where confirmed plates missed in this frame are expected
        for row, state in enumerate(self._states):
            if row not in matched_rows:
                state.track.misses += 1
                lost = (
                    state.track.misses > config.max_misses
                    or frame_time - state.last_match_time > config.max_gap_s
                )
                if lost:
                    self._end(state, EndReason.LOST, ended, suppressed)
                    continue
                if state.confirmed:
                    coasting_boxes.append(predicted[row])
            too_old = (
                state.track.frames_seen > 0
                and frame_time - state.track.first_seen >= config.max_age_s
            )
            if too_old:
                counted = self._end(state, EndReason.MAX_AGE, ended, suppressed)
                if state.confirmed:
                    survivors.append(self._continue(state, counted))
                continue
            survivors.append(state)

        # A second detection lying on a plate already matched this frame is the same plate read
        # again (a window over part of it), not a new vehicle. So is one lying where a confirmed
        # plate missed in this frame is expected: a plate leaving the image at its edge is lost
        # while its state name, still whole, is found.
        plate_boxes = [*matched_boxes, *coasting_boxes]
        for column in free:
            if self._lies_on_larger(detections[column].box, plate_boxes):
                continue
            started = self._start(detections[column], frame_time, frame_number)
            if started.confirmed:  # min_frames 1
                self._absorb_earlier_text_lines(started, where)
            survivors.append(started)
        self._states = survivors
        return self._snapshot(frame_time, frame_number, confirmed, provisional, ended, suppressed)

    def take_recent_reports(self, earlier: Tracker) -> None:
        """Carry `earlier`'s recent reports (`same_plate_window_s`) into this tracker, which takes
        over from it on the same camera (a reload that flushed its tracks): a car still in view
        then continues that passage instead of making a second event."""
        self._recent_plates = deque(earlier._recent_plates)

    def expire(self, now: float, frame_number: int) -> TrackerUpdate:
        """End the tracks not matched for more than `max_gap_s` before `now`, with no frame to
        count misses on (a camera that is down): their events go out now, not when it returns."""
        ended: list[TrackReport] = []
        suppressed: list[TrackReport] = []
        survivors: list[_TrackState] = []
        for state in self._states:
            if now - state.last_match_time > self._config.max_gap_s:
                self._end(state, EndReason.LOST, ended, suppressed)
            else:
                survivors.append(state)
        self._states = survivors
        return self._snapshot(now, frame_number, [], [], ended, suppressed)

    def flush(self, frame_time: float, frame_number: int) -> TrackerUpdate:
        """End every live track now (shutdown, end of a file) so no pending event is lost."""
        ended: list[TrackReport] = []
        suppressed: list[TrackReport] = []
        for state in self._states:
            self._end(state, EndReason.FLUSHED, ended, suppressed)
        self._states = []
        return self._snapshot(frame_time, frame_number, [], [], ended, suppressed)

    def _absorb_earlier_text_lines(self, plate: _TrackState, where: dict[int, Box]) -> None:
        """`plate` was just confirmed: an older, much shorter track lying on it now is a line of its
        text found before the plate itself (a state name whole while its plate was still entering
        the image), if `plate` turns out to be a plate. `where`: each live track's box in this
        frame, matched or predicted."""
        for other in self._states:
            box = where[id(other)]
            if (other is not plate and other.track.first_frame < plate.track.first_frame
                    and box.h <= TEXT_LINE_MAX_HEIGHT * plate.track.box.h
                    and self._lies_on_larger(box, [plate.track.box])):
                other.text_line_of = plate

    def _lies_on_larger(self, box: Box, others: Sequence[Box]) -> bool:
        """`box` covers `duplicate_overlap` of itself with a larger box of `others`, taken with the text
        lines above and below its characters (`PLATE_LINE_MARGIN`): part of that plate."""
        return any(
            other.w * other.h > box.w * box.h
            and _overlap_of_smaller(box, _with_text_lines(other)) >= self._config.duplicate_overlap
            for other in others
        )

    # --- association ----------------------------------------------------------------------------

    def _associate(
        self,
        rows: Sequence[int],
        predicted: Sequence[Box],
        detections: Sequence[Detection],
        columns: Sequence[int],
    ) -> list[tuple[int, int]]:
        """Minimum-cost pairs (track row, detection index) among the given ones, gates applied."""
        if not rows or not columns:
            return []
        cost = self._cost(
            [predicted[row] for row in rows],
            [self._states[row].track.box.w for row in rows],
            [self._states[row].texts() for row in rows],
            [detections[column] for column in columns],
        )
        track_index, detection_index = linear_sum_assignment(cost)
        return [
            (rows[i], columns[j])
            for i, j in zip(track_index, detection_index, strict=True)
            if cost[i, j] < _IMPOSSIBLE
        ]

    def _cost(
        self,
        boxes: Sequence[Box],
        last_widths: Sequence[float],
        track_texts: Sequence[tuple[str, ...]],
        detections: Sequence[Detection],
    ) -> np.ndarray:
        """(tracks x detections) association cost, `_IMPOSSIBLE` where gated. `boxes`: each track's
        predicted box; `last_widths`: the width of its last matched box."""
        config = self._config
        tracks = np.array([[b.x, b.y, b.w, b.h] for b in boxes], dtype=np.float64)
        dets = np.array(
            [[d.box.x, d.box.y, d.box.w, d.box.h] for d in detections], dtype=np.float64
        )
        t = tracks[:, None, :]
        d = dets[None, :, :]
        inter_w = np.clip(
            np.minimum(t[..., 0] + t[..., 2], d[..., 0] + d[..., 2])
            - np.maximum(t[..., 0], d[..., 0]),
            0,
            None,
        )
        inter_h = np.clip(
            np.minimum(t[..., 1] + t[..., 3], d[..., 1] + d[..., 3])
            - np.maximum(t[..., 1], d[..., 1]),
            0,
            None,
        )
        inter = inter_w * inter_h
        union = t[..., 2] * t[..., 3] + d[..., 2] * d[..., 3] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)

        # Centre distance in box sizes: the larger side of each box, averaged over the pair.
        dx = (t[..., 0] + t[..., 2] / 2) - (d[..., 0] + d[..., 2] / 2)
        dy = (t[..., 1] + t[..., 3] / 2) - (d[..., 1] + d[..., 3] / 2)
        size = (np.maximum(t[..., 2], t[..., 3]) + np.maximum(d[..., 2], d[..., 3])) / 2
        distance = np.hypot(dx, dy) / np.maximum(size, _MIN_SIDE)

        # Plates change size smoothly and the prediction follows their growth; a much narrower or
        # wider box near a plate (a tail light, a sign) is another object. Width only: the
        # detector's box height jumps between frames of one plate (15 to 34 px for a 60-70 px
        # wide plate of the bundled clip, where a frame or two takes in a row above the text).
        # Near either the predicted or the last matched width: one jumpy box gives the predicted
        # width a velocity that a few missed frames blow up (clip 4: 99, 75, three misses, 79 px
        # predicted as 48).
        widths_d = np.maximum(d[..., 2], _MIN_SIDE)

        def width_ratio(widths_t: np.ndarray) -> np.ndarray:
            widths_t = np.maximum(widths_t, _MIN_SIDE)
            return np.maximum(widths_t / widths_d, widths_d / widths_t)

        last = np.asarray(last_widths, dtype=np.float64)[:, None]
        ratio = np.minimum(width_ratio(t[..., 2]), width_ratio(last))
        near = (distance <= config.max_center_distance) & (ratio <= config.max_size_ratio)
        text = np.zeros_like(iou)
        text_gated = np.zeros(iou.shape, dtype=bool)
        for i, texts in enumerate(track_texts):
            for j, detection in enumerate(detections):
                if not near[i, j]:
                    continue  # gated by distance already: skip the edit distances
                # A near-zero-confidence reading (a small or blurred plate) says nothing about
                # whether it is the same plate: it must not split the track.
                if texts and detection.text and detection.confidence >= config.text_min_confidence:
                    text[i, j] = min(normalized_edit_distance(s, detection.text) for s in texts)
                    text_gated[i, j] = text[i, j] > config.max_text_distance
                else:  # nothing to compare: neutral, never gated
                    text[i, j] = 0.5

        cost = (
            config.iou_weight * (1 - iou)
            + config.distance_weight * distance / config.max_center_distance
            + config.text_weight * text
        )
        gated = ~near | text_gated
        return np.where(gated, _IMPOSSIBLE, cost)

    # --- lifetime -------------------------------------------------------------------------------

    def _new_fusion(self) -> CandidateFusion:
        config = self._config
        return CandidateFusion(
            max_frames=config.fusion_max_frames,
            max_candidates=config.fusion_max_candidates,
            log_floor=config.fusion_log_floor,
            top_n=config.top_n,
            effective_frames=config.fusion_effective_frames,
            prior=self._prior,
        )

    def _start(self, detection: Detection, frame_time: float, frame_number: int) -> _TrackState:
        track = Track(
            track_id=next(self._ids),
            camera_id=self._camera_id,
            box=detection.box,
            first_seen=frame_time,
            last_seen=frame_time,
            first_frame=frame_number,
            last_frame=frame_number,
        )
        state = _TrackState(
            track=track,
            motion=self._make_filter(detection.box, frame_time),
            fusion=self._new_fusion(),
            last_match_time=frame_time,
        )
        self._record(state, detection)
        if self._config.min_frames <= 1:
            state.confirmed = True
        return state

    def _continue(self, old: _TrackState, counted: bool) -> _TrackState:
        """A fresh track on the same line as `old`, which reached `max_age_s`; `counted`: whether
        `old`'s plate was reported (by it or by the passage it belongs to). A plate not yet
        reported (never read clearly) is not on the line, so a clear read later reports it."""
        reading = old.fusion.reading()
        reported = old.reported_texts
        if counted and reading.text and not self._reported_on_line(old, reading.text):
            reported = (*reported, reading.text)
        track = dataclasses.replace(
            old.track,
            track_id=next(self._ids),
            frames_seen=0,
            detections=[],
        )
        return _TrackState(
            track=track,
            motion=old.motion,
            fusion=self._new_fusion(),
            last_match_time=old.last_match_time,
            last_text=reading.text or old.last_text,
            reported_texts=reported,
            continuation_of=old.track.track_id,
        )

    def _match(
        self, state: _TrackState, detection: Detection, frame_time: float, frame_number: int
    ) -> None:
        track = state.track
        if track.frames_seen == 0:  # a continuation's first match opens its time span
            track.first_seen, track.first_frame = frame_time, frame_number
        track.box = detection.box
        track.last_seen, track.last_frame = frame_time, frame_number
        track.misses = 0
        state.motion.update(detection.box, frame_time)
        state.last_match_time = frame_time
        self._record(state, detection)

    def _record(self, state: _TrackState, detection: Detection) -> None:
        state.track.frames_seen += 1
        if not carries_reading(detection):  # followed, not read: no evidence on the text
            state.unread += 1
            return
        state.reads += 1
        state.unread = 0
        state.fusion.add(detection)
        state.track.detections = state.fusion.detections
        if detection.text and detection.confidence >= self._config.text_min_confidence:
            # only a read good enough to gate by may speak for the track: a garbled first read of
            # a new plate matched to an old track would let that plate's clear reads through
            state.last_text = detection.text
        if detection.text and detection.pattern is not None:
            state.patterns.setdefault(detection.text, Counter())[detection.pattern] += 1

    def _already_reported(self, state: _TrackState, text: str) -> bool:
        return self._reported_on_line(state, text) or self._reported_recently(state, text)

    def _reported_on_line(self, state: _TrackState, text: str) -> bool:
        """Reported by the tracks this one continues (a vehicle in view past `max_age_s`)."""
        limit = self._config.same_plate_max_text_distance
        return any(normalized_edit_distance(text, seen) <= limit for seen in state.reported_texts)

    def _reported_recently(self, state: _TrackState, text: str) -> bool:
        """The same plate reported by a track last seen at most `same_plate_window_s` before this
        one started: a vehicle whose track broke (a fast approach, a long occlusion). Exact text:
        two vehicles never carry one plate, while similar plates side by side are common."""
        window = self._config.same_plate_window_s
        # No track that could still end started more than max_age_s before this one was last seen.
        horizon = state.track.last_seen - self._config.max_age_s - window
        while self._recent_plates and self._recent_plates[0][1] < horizon:
            self._recent_plates.popleft()
        return any(
            seen == text and state.track.first_seen - last_seen <= window
            for seen, last_seen in self._recent_plates
        )

    def _due_provisional(self, state: _TrackState) -> bool:
        after = self._config.provisional_after_frames
        if after is None or state.provisional_done or not state.confirmed:
            return False
        if state.track.frames_seen < after:
            return False
        text = state.fusion.reading().text
        if len(text) < self._config.min_plate_length:  # nothing readable yet: try on the next match
            return False
        state.provisional_done = True
        return not self._already_reported(state, text)

    def _end(
        self,
        state: _TrackState,
        reason: EndReason,
        ended: list[TrackReport],
        suppressed: list[TrackReport],
    ) -> bool:
        """Report an ending track, or suppress it; True when its plate counts as reported (now, or
        earlier in the same passage)."""
        if not state.confirmed or state.track.frames_seen == 0:
            return False  # tentative (false positive) or a continuation that never matched
        report = self._report(state, reason)
        text = report.reading.text
        plate = self._is_plate(state)
        same_passage = plate and self._reported_recently(state, text)
        reported = plate and not same_passage and not self._reported_on_line(state, text)
        (ended if reported else suppressed).append(report)
        if reported or same_passage:
            # a later piece of this passage (a stopped car found on and off) is measured from here
            self._recent_plates.append((text, state.track.last_seen))
        return reported or same_passage

    def _is_plate(self, state: _TrackState) -> bool:
        """Whether the track's fused reading is a plate to report, not yet asking whether it was."""
        # Fusing many unreadable frames still ranks some string first: an object that was never
        # once read with confidence (a sign, a grille) is not a plate to report.
        read_once = any(d.confidence >= self._config.text_min_confidence for d in state.track.detections)
        # A track that spent most of its life on a larger plate is a part of that plate, and so is
        # one found to be a line of a plate's text (when that plate is one: a large box read as
        # junk over a real plate does not make the plate its fragment).
        fragment = 2 * state.fragment_frames > state.track.frames_seen or (
            state.text_line_of is not None and self._is_plate(state.text_line_of))
        long_enough = len(state.fusion.reading().text) >= self._config.min_plate_length
        return long_enough and read_once and not fragment

    def _report(self, state: _TrackState, reason: EndReason | None = None) -> TrackReport:
        reading = state.fusion.reading()
        return TrackReport(
            track=dataclasses.replace(state.track, detections=list(state.track.detections)),
            reading=reading,
            pattern=reading.country or state.pattern(reading.text),
            end_reason=reason,
            continuation_of=state.continuation_of,
        )

    def _snapshot(
        self,
        frame_time: float,
        frame_number: int,
        confirmed: list[TrackReport],
        provisional: list[TrackReport],
        ended: list[TrackReport],
        suppressed: list[TrackReport],
    ) -> TrackerUpdate:
        return TrackerUpdate(
            frame_time=frame_time,
            frame_number=frame_number,
            tracks=tuple(s.track for s in self._states if s.confirmed),
            tentative=tuple(s.track for s in self._states if not s.confirmed),
            confirmed=tuple(confirmed),
            provisional=tuple(provisional),
            ended=tuple(ended),
            suppressed=tuple(suppressed),
        )
