"""The search plan: the one thing every cascade stage hands the detector.

A plan says where the detection network looks in one frame:

- `regions`: boxes, each with the plate widths it may hold (a live track's predicted plate). The
  detector scans each region at the pyramid levels that bring those widths into the network's
  60-80% window band, on crops a few windows wide (`anprd.detector.level_crops`), and groups their
  hits together.
- `propose_in`: areas where the detector's pre-filter (`cascade.hog.HogPrefilter`) proposes more
  regions (`WHOLE_FRAME`: the whole frame, as for a still image). With no pre-filter loaded
  (`detector.prefilter: none`) an area is scanned at every plate width instead, and the whole
  frame is the whole pyramid.
- `coarse`: areas where the coarse levels (plates at least `detector.prefilter_full_scan_width`
  wide) are scanned as well; their hits are grouped apart and read only where the regions proposed
  nothing. `WHOLE_FRAME` scans those levels whole, as a still image does.
- `full_pyramid`: every level of the whole frame; the rest is then ignored.
- `prefilter`: which pre-filter proposes in `propose_in` (`Prefilter`: the proposal network or HOG,
  and its model folder); None: the detector's own (`detector.prefilter`). A video's cascade names
  its own (`cascade.prefilter`), so photos and video can each use the one that suits them.

A region also says how the plate found in it is read (`read`): `READ_FULL`, as a still image's
plates are (verification, every reader at every `read_scales` factor, inverted as well);
`READ_ONE`, one view at scale 1 in the plate's polarity (a track whose fused reading is sure, on its
k-th frame); `READ_NONE`, verification only: the plate's box and presence, no text (a sure track's
other frames: the tracker follows the box and fuses only the frames read). The mode applies to the
plate found on the region's `plate` box (its predicted plate); any other plate is read in full.

An empty plan (no region, no coarse area, no full pyramid) runs no network at all: a frame with
nothing moving and no live track costs only the motion gate.

    plan = still_plan()                       # what `anprd detect` and `eval` scan
    detections = detector.detect(image, plan)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["READ_FULL", "READ_MODES", "READ_NONE", "READ_ONE", "WHOLE_FRAME", "Prefilter", "Region",
           "SearchPlan", "not_covered", "regions_in_areas", "still_plan"]

Box4 = tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels

WHOLE_FRAME: Box4 = (0.0, 0.0, float("inf"), float("inf"))  # a coarse area covering any frame

READ_FULL = "full"  # every reader at every read scale, inverted too: what a still image gets
READ_ONE = "one"  # one view at scale 1, in the polarity the plate reads best in
READ_NONE = "none"  # verification only: box and presence, no text
READ_MODES = (READ_FULL, READ_ONE, READ_NONE)


@dataclass(frozen=True)
class Region:
    """A region in image pixels and the plate widths (pixels) it may hold.

    box: (x0, y0, x1, y1). plate_widths: narrowest and widest plate the search there is for.
    score: how sure the stage that proposed it is (HOG: the best SVM margin; a track: its presence
    score; motion: 0). source: which stage proposed it ("hog", "track", "motion").
    read: how the plate found on `plate` is read (`READ_FULL`, `READ_ONE`, `READ_NONE`; see the
    module docstring). plate: the plate box (x0, y0, x1, y1) the region was made around (a track's
    prediction), None for other stages.
    """

    box: Box4
    plate_widths: tuple[float, float]
    score: float
    source: str = "hog"
    read: str = READ_FULL
    plate: Box4 | None = None

    def __post_init__(self) -> None:
        if self.read not in READ_MODES:
            raise ValueError(f"read must be one of {READ_MODES}, got {self.read!r}")


@dataclass(frozen=True)
class Prefilter:
    """A pre-filter: kind ("proposer", "hog" or "none") and model folder (None: the shipped one)."""

    kind: str
    model: str | None = None


@dataclass(frozen=True)
class SearchPlan:
    """Where the detection network looks in one frame (see the module docstring).

    reason: why the plan is what it is ("still", "scheduled", "motion", "tracks", "idle"), for logs,
    metrics and the bench. full_pyramid: every level of the whole frame, the rest ignored.
    propose_threshold: the pre-filter's SVM margin for proposals in `propose_in` (None: the
    detector's `prefilter_threshold`, as for a still image). prefilter: the pre-filter for
    `propose_in` and the coarse levels it needs (None: the detector's).
    """

    regions: tuple[Region, ...] = ()
    propose_in: tuple[Box4, ...] = ()
    coarse: tuple[Box4, ...] = ()
    propose_threshold: float | None = None
    full_pyramid: bool = False
    reason: str = "still"
    prefilter: Prefilter | None = None
    stats: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def read_hints(self) -> tuple[tuple[Box4, str], ...]:
        """(plate box, read mode) of the regions whose plate is read other than in full."""
        return tuple((r.plate, r.read) for r in self.regions if r.read != READ_FULL and r.plate is not None)

    @property
    def empty(self) -> bool:
        """True when the plan runs no network."""
        return not (self.full_pyramid or self.regions or self.propose_in or self.coarse)


def still_plan(regions: tuple[Region, ...] = ()) -> SearchPlan:
    """A still image's plan: the pre-filter's regions in the whole frame plus the coarse levels
    whole (the whole pyramid with no pre-filter), and `regions` besides."""
    return SearchPlan(regions=regions, propose_in=(WHOLE_FRAME,), coarse=(WHOLE_FRAME,))


def not_covered(proposed: list[Region], searched: tuple[Region, ...]) -> list[Region]:
    """The `proposed` regions not already searched: a proposal whose centre lies inside a `searched`
    region (a live track's) whose plate widths overlap its own adds nothing but network time, as the
    track's region is searched at the plate's own scale anyway."""
    if not searched:
        return proposed
    kept = []
    for region in proposed:
        cx, cy = (region.box[0] + region.box[2]) / 2, (region.box[1] + region.box[3]) / 2
        lo, hi = region.plate_widths
        if not any(s.box[0] <= cx <= s.box[2] and s.box[1] <= cy <= s.box[3]
                   and s.plate_widths[0] <= hi and lo <= s.plate_widths[1] for s in searched):
            kept.append(region)
    return kept


FrameEdges = tuple[bool, bool, bool, bool]  # which sides of a crop (left, top, right, bottom) are the frame's
ALL_EDGES: FrameEdges = (True, True, True, True)


def regions_in_areas(gray: np.ndarray, areas: tuple[Box4, ...],
                     regions: Callable[[np.ndarray, FrameEdges], list[Region]],
                     grow: tuple[float, float] = (0.0, 0.0), at_least: tuple[float, float] = (0.0, 0.0),
                     smallest: tuple[int, int] = (1, 1)) -> list[Region]:
    """A pre-filter's `regions(crop, frame_edges)` inside `areas` (x0, y0, x1, y1; `WHOLE_FRAME`: all
    of `gray`), in `gray`'s pixels, best first. Each area is scanned on its own crop: the area grown by
    `grow` (width, height) about its centre, to at least `at_least`, clipped to the image; a crop
    smaller than `smallest` is skipped. `frame_edges` says which of the crop's sides are the image's
    own edges (the others have image around them). A plate straddling two areas is found in either,
    as they overlap."""
    if WHOLE_FRAME in areas:
        return regions(gray, ALL_EDGES)
    h, w = gray.shape[:2]
    found: list[Region] = []
    for x0, y0, x1, y1 in areas:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        half_w, half_h = max(x1 - x0 + grow[0], at_least[0]) / 2, max(y1 - y0 + grow[1], at_least[1]) / 2
        left, top = max(0, math.floor(cx - half_w)), max(0, math.floor(cy - half_h))
        right, bottom = min(w, math.ceil(cx + half_w)), min(h, math.ceil(cy + half_h))
        if right - left < smallest[0] or bottom - top < smallest[1]:
            continue
        edges = (left == 0, top == 0, right == w, bottom == h)
        for region in regions(np.ascontiguousarray(gray[top:bottom, left:right]), edges):
            bx0, by0, bx1, by1 = region.box
            found.append(Region((bx0 + left, by0 + top, bx1 + left, by1 + top), region.plate_widths,
                                region.score, region.source))
    return sorted(found, key=lambda r: -r.score)
