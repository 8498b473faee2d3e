"""Plain data exchanged between pipeline stages.

source -> Frame -> detector -> Detection -> tracker -> Track -> events -> PlateEvent -> publisher

Every stage takes and returns these types only; no stage reaches into another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Box", "Candidate", "Detection", "Frame", "PlateEvent", "Track"]


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in image pixels: top-left corner (x, y), width w, height h."""

    x: float
    y: float
    w: float
    h: float

    @property
    def x2(self) -> float:
        return self.x + self.w

    @property
    def y2(self) -> float:
        return self.y + self.h

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    def intersection_area(self, other: Box) -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x, other.x))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y, other.y))
        return ix * iy

    def iou(self, other: Box) -> float:
        inter = self.intersection_area(other)
        union = self.w * self.h + other.w * other.h - inter
        return inter / union if union > 0 else 0.0

    def as_list(self) -> list[int]:
        return [round(self.x), round(self.y), round(self.w), round(self.h)]


@dataclass(frozen=True)
class Frame:
    """One decoded image from a source.

    image: HxWx3 uint8 BGR (OpenCV order). timestamp: seconds since the epoch (UTC) when it was
    read (or the file's media time for replay). sequence: per-source frame number, from 0.
    """

    image: np.ndarray
    timestamp: float
    source_id: str
    sequence: int


@dataclass(frozen=True)
class Candidate:
    """One reading of a plate and its probability."""

    text: str
    confidence: float


@dataclass(frozen=True)
class Detection:
    """One plate found in one frame.

    text/confidence: the best reading; candidates: top-N readings, best first.
    char_probs: the reader's per-column CTC posteriors (T x (len(ALPHABET)+1), last column = blank),
    or K x T x (len(ALPHABET)+1) for K reads of the plate (crops at several scales), kept so the
    tracker can fuse evidence across frames instead of voting on strings.
    presence: the detector's plate-presence score in [0, 1].
    pattern: the name of the plate pattern the text matched, or None.
    """

    box: Box
    presence: float
    text: str
    confidence: float
    candidates: tuple[Candidate, ...] = ()
    char_probs: np.ndarray | None = None
    pattern: str | None = None


@dataclass
class Track:
    """One plate followed across frames; owned and updated by the tracker only."""

    track_id: int
    camera_id: str
    box: Box
    first_seen: float
    last_seen: float
    first_frame: int
    last_frame: int
    frames_seen: int = 0
    misses: int = 0
    detections: list[Detection] = field(default_factory=list)


@dataclass(frozen=True)
class PlateEvent:
    """One event per vehicle passage, ready to be published (see schema/plate_event.schema.json)."""

    event_id: str
    sequence: int
    camera_id: str
    plate: str
    confidence: float
    candidates: tuple[Candidate, ...]
    box: Box
    first_seen: float
    last_seen: float
    first_frame: int
    last_frame: int
    frames_seen: int
    pattern: str | None = None
    provisional: bool = False
    supersedes: str | None = None
    crop_jpeg: bytes | None = None
