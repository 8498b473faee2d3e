"""Tracker settings: association gates and weights, track lifetime, CTC fusion and event timing."""

from __future__ import annotations

from pydantic import Field, model_validator

from anprd.config.base import AnprdBaseModel

__all__ = ["TrackerConfig"]


class TrackerConfig(AnprdBaseModel):
    """How detections are linked into tracks and when a track is confirmed, reported and ended."""

    # --- lifetime -------------------------------------------------------------------------------
    min_frames: int = Field(
        3,
        ge=1,
        description="Matched frames before a track is confirmed; shorter tracks (false positives) "
        "give no event.",
    )
    max_misses: int = Field(
        10,
        ge=0,
        description="Consecutive unmatched frames a track survives (occlusions) before it ends.",
    )
    max_gap_s: float = Field(
        2.0,
        gt=0,
        description="Seconds without a match after which a track ends, whatever the frame rate "
        "(and while a camera that dropped sends none).",
    )
    max_age_s: float = Field(
        60.0,
        gt=0,
        description="A track older than this is reported and continued by a fresh track that does "
        "not report the same plate again (a car parked in view gives one event).",
    )
    provisional_after_frames: int | None = Field(
        None,
        ge=1,
        description="Matched frames after which an early provisional event is emitted; None: off. "
        "Must be >= min_frames.",
    )
    same_plate_max_text_distance: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Normalised edit distance under which a continuation's plate counts as the one "
        "already reported (no duplicate event).",
    )
    same_plate_window_s: float = Field(
        5.0,
        ge=0,
        description="A new track that reads exactly the plate reported by a track last seen at most "
        "this long before it started is the same passage (its track broke on a fast approach, an "
        "occlusion or a stop): no second event; the passage is then measured from the new piece. "
        "0 disables.",
    )

    # --- association ----------------------------------------------------------------------------
    max_center_distance: float = Field(
        2.0,
        gt=0,
        description="Gate: largest distance between a track's predicted centre and a detection's "
        "centre, in box sizes (the larger side of the boxes, averaged).",
    )
    max_size_ratio: float = Field(
        1.5,
        gt=1,
        description="Gate: largest factor by which a detection's box width may differ from the "
        "track's predicted box or its last matched box; a tail light or a sign beside a plate "
        "cannot take over its track.",
    )
    max_text_distance: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Gate: largest normalised edit distance between a detection's text and the "
        "track's text when both are non-empty; 1 disables the gate.",
    )
    duplicate_overlap: float = Field(
        0.5,
        gt=0,
        le=1,
        description="An unmatched detection covering at least this fraction of its area (or of the "
        "other's) of a plate matched in the same frame, or of where a confirmed plate missed in "
        "this frame is expected, is a second reading of that plate, not a new "
        "track. A plate's box counts with a quarter of its height above and below it, where US "
        "state names and slogans are printed.",
    )
    text_min_confidence: float = Field(
        0.1,
        ge=0,
        le=1,
        description="A detection's text takes part in association (cost and gate) only when its "
        "reading has at least this probability; garbled reads of small plates then cannot split "
        "a track. A track none of whose frames was read this well is not reported.",
    )
    iou_weight: float = Field(
        1.0, ge=0, description="Cost weight of (1 - IoU with the prediction)."
    )
    distance_weight: float = Field(
        1.0, ge=0, description="Cost weight of the centre distance (as a fraction of the gate)."
    )
    text_weight: float = Field(
        1.0, ge=0, description="Cost weight of the normalised edit distance between texts."
    )
    motion_alpha: float = Field(
        0.7,
        gt=0,
        le=1,
        description="Alpha-beta filter position gain: 1 trusts each measurement fully.",
    )
    motion_beta: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Alpha-beta filter velocity gain: 0 keeps the first velocity estimate.",
    )

    # --- fusion ---------------------------------------------------------------------------------
    top_n: int = Field(5, ge=1, description="Fused candidates kept per track and event.")
    fusion_max_frames: int = Field(
        8,
        ge=1,
        description="Most confident detections kept as fusion evidence per track: the sharpest, "
        "nearest frames decide the plate, while far and blurred frames repeat one another's "
        "errors (docs/experiments.md, tracker rules); also bounds memory and cost for long tracks.",
    )
    fusion_max_candidates: int = Field(
        32,
        ge=1,
        description="Candidate strings scored per track; the least likely are pruned and rescored "
        "if seen again.",
    )
    fusion_log_floor: float = Field(
        -14.0,
        lt=0,
        description="Lowest log-likelihood one frame can give a candidate, so one bad frame cannot "
        "veto a plate; also the score of an unlisted candidate when a frame has no posteriors.",
    )
    fusion_effective_frames: float = Field(
        3.0,
        ge=1,
        description="Independent frames a track's evidence counts as for its confidence: frames of "
        "one plate share their errors, so 100 frames are not 100 witnesses. Changes the reported "
        "confidence and candidate probabilities, never the chosen text.",
    )
    min_plate_length: int = Field(
        2,
        ge=1,
        description="Characters a fused plate needs to be reported; shorter readings (a lamp or a "
        "sign read as one letter) end silently. 1 reports single-character plates.",
    )

    @model_validator(mode="after")
    def _check(self) -> TrackerConfig:
        verify_provisional_after_confirmation(self)
        return self


def verify_provisional_after_confirmation(config: TrackerConfig) -> None:
    """A provisional event needs a confirmed track, so it cannot come before `min_frames`."""
    after = config.provisional_after_frames
    if after is not None and after < config.min_frames:
        raise ValueError(
            f"provisional_after_frames ({after}) must be >= min_frames ({config.min_frames})"
        )
