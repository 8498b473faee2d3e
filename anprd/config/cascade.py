"""Cascade settings: which stages decide where the detection network looks in a video frame.

A still image (`anprd detect`, `anprd eval`) is not affected: it is scanned in the pre-filter's
regions (and the coarse levels whole, `detector.prefilter*`). In a video (`anprd run`,
`anprd replay`) each frame gets a search plan from these stages (`cascade.FrameCascade`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from anprd.config.base import AnprdBaseModel

__all__ = ["CascadeConfig"]


class CascadeConfig(AnprdBaseModel):
    """The video cascade: motion gate, track-guided search, proposals in motion, scheduled full pass."""

    enabled: bool = Field(
        True,
        description="Plan each video frame's search with the stages below. Off: every frame is "
        "scanned as a still image is (the pre-filter's regions, or the whole pyramid with "
        "detector.prefilter none).",
    )
    prefilter: Literal["proposer", "hog", "detector"] = Field(
        "proposer",
        description="The pre-filter of video frames: new plates in the moving areas and the "
        "whole-frame passes. 'proposer': the proposal network (a new car's frame in about a quarter "
        "of the HOG path's time, docs/speed.md); 'hog': the HOG pre-filter; 'detector': "
        "detector.prefilter, as still images use.",
    )
    prefilter_model: str | None = Field(
        None,
        description="Folder of cascade.prefilter's model, resolved like detector.model; null: the "
        "shipped one (models/proposer-v1, models/hog-v1).",
    )
    motion: bool = Field(
        True,
        description="Motion gate: frames are compared at low resolution, outside the camera's mask "
        "polygons; new plates are looked for only where something moved, and a frame with nothing "
        "moving and no live track runs no network. Off: new plates are looked for in the whole frame "
        "on every frame.",
    )
    motion_width: int = Field(
        320, ge=64, le=1920, description="Width in pixels the motion gate compares frames at."
    )
    motion_threshold: int = Field(
        18,
        ge=1,
        le=255,
        description="Grey-level change (at motion_width, after a small blur) that counts as motion; "
        "above sensor noise and compression flicker, below a car's edges.",
    )
    motion_gap_frames: int = Field(
        2,
        ge=1,
        le=30,
        description="A frame is compared with the frame this many frames earlier (and the one "
        "before): slow cars at a gate move too little between two frames.",
    )
    motion_min_area: float = Field(
        0.0005,
        ge=0,
        lt=1,
        description="Smallest moving blob that counts, as a fraction of the frame area; smaller ones "
        "(noise, leaves) are ignored.",
    )
    motion_pad: float = Field(
        0.15,
        ge=0,
        le=5,
        description="Each moving area is widened by this fraction of its size on every side before "
        "plates are looked for in it (a plate moves less than the car's edges).",
    )
    tracks: bool = Field(
        True,
        description="Track-guided search: every live track's predicted plate box is searched at its "
        "own scale, in a crop a few network windows wide, on every frame, whatever the motion gate "
        "says.",
    )
    track_windows: float = Field(
        2.5,
        ge=1.2,
        le=10,
        description="Width of a track's search crop, in network windows at the track's scale (a "
        "window is about 1.4 plate widths).",
    )
    track_scale_range: float = Field(
        1.15,
        gt=1,
        le=3,
        description="A track's plate is looked for from its predicted width divided by this to the "
        "width times this.",
    )
    sure_reading: bool = Field(
        True,
        description="A track whose fused reading is sure (sure_confidence over sure_reads read "
        "frames) is still searched and followed on every frame, but its plate is read only on every "
        "sure_read_every-th frame, in one view (scale 1, in the polarity it reads best in), and the "
        "tracker fuses only the frames read. Off: every tracked plate is read in full on every frame.",
    )
    sure_confidence: float = Field(
        0.98,
        ge=0.5,
        le=1,
        description="Fused confidence at which a track's reading counts as sure (sure_reading).",
    )
    sure_reads: int = Field(
        5,
        ge=1,
        le=100,
        description="Frames a track must have been read in (and fused) before its reading can count "
        "as sure (sure_reading).",
    )
    sure_read_every: int = Field(
        5,
        ge=1,
        le=60,
        description="A sure track's plate is read on every this-many-th frame it is found in "
        "(sure_reading); a different plate that took its place is told apart at its next read.",
    )
    proposals: bool = Field(
        True,
        description="Proposals for new plates: the pre-filter (detector.prefilter) inside "
        "the moving areas. Off, or with prefilter none: the moving areas are scanned at every "
        "plate width.",
    )
    new_plate_every: int = Field(
        3,
        ge=1,
        le=30,
        description="Look for new plates in the moving areas on every this-many-th frame (the live "
        "tracks are searched on every frame): a passing plate is in view for a second or more, so 10 "
        "looks a second at 30 fps find it, for a third of the work.",
    )
    proposal_threshold: float | None = Field(
        0.25,
        ge=-3,
        le=3,
        description="Score over the pre-filter's calibrated operating point (HOG: SVM margin; "
        "proposer: logit) for proposals inside moving areas; null uses "
        "detector.prefilter_threshold. Stricter than a still image's: a passing plate is seen in many "
        "frames, so one it scores low in now is proposed in a later frame, and false proposals on car "
        "bodies cost network time on every frame.",
    )
    full_pass_interval_s: float = Field(
        2.0,
        gt=0,
        description="Seconds (of frame time) between scheduled whole-frame passes, the safety net "
        "that finds plates the other stages miss (a car that stopped before it was seen); one also "
        "runs on a source's first frame.",
    )
    full_pass_slices: int = Field(
        3,
        ge=1,
        le=8,
        description="The whole-frame pass is spread over this many consecutive frames, each searching "
        "a horizontal band of the frame (bands overlap by 15% of the frame height), so that no one "
        "frame holds the frames behind it up for long (live latency); 1 searches the whole frame at "
        "once.",
    )
