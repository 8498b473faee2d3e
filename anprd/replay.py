"""``anprd replay VIDEO``: the daemon's per-camera pipeline over one file, as fast as it decodes.

Every frame is processed (``replay_pace: fast`` never drops), so a replay is the reference a
live run is compared with. Events are printed to stdout as they happen, one JSON object per line
in the wire format (`anprd.events.event_to_json`); a progress bar goes to stderr when it is a
terminal. With ``--truth`` the final events are scored against a CSV of the plates that pass:

    plate[,first_frame,last_frame]      (a header line ``plate,...`` is optional)

An event is a true positive when its plate (spaces and hyphens ignored) equals a truth plate not
yet matched, a duplicate when every truth row of that plate is already matched, and a false
positive otherwise. ``--json`` ends the output with one summary object (`SUMMARY_KEYS`); without
it a short table follows the events. ``--annotate OUT`` writes the frames with plate boxes,
track ids, readings and the mask (``.mp4``: mp4v, ``.avi``: MJPG).

``--config`` supplies the detector and tracker sections, and the ``mask`` of the camera whose id
is ``--camera-id``, if there is one.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import ValidationError

from anprd.annotate import draw_detections, overwritten_input
from anprd.config import (
    AnprdConfig,
    CameraConfig,
    CascadeConfig,
    ReplayPace,
    TrackerConfig,
    load_config,
    mask_url,
)
from anprd.config.detector import DetectorConfig
from anprd.ctc import ALPHABET, normalise_plate
from anprd.detector import PlateDetector
from anprd.errors import AnprdError
from anprd.events import EventSequencer, event_to_json
from anprd.grabber import DEFAULT_VIDEO_FPS, FrameSource, SourceState, open_source, usable_frame_rate
from anprd.logs import setup_logging
from anprd.pipeline import CameraPipeline, ProcessedFrame, mask_contours, warm_up
from anprd.types import PlateEvent

__all__ = [
    "SUMMARY_KEYS",
    "ReplayError",
    "ReplayScore",
    "TruthPlate",
    "format_summary",
    "read_truth",
    "replay_command",
    "run_source",
    "score_events",
    "summary_json",
]

SUMMARY_KEYS = (
    "events",
    "truth_plates",
    "true_positives",
    "false_positives",
    "duplicates",
    "precision",
    "recall",
    "fps",
)
_WRITER_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
# Frames between the grabber's decoding and the detector: decoding runs ahead while TF works.
_REPLAY_QUEUE_SIZE = 8
# How long an event's plate stays in the annotated video's banner.
_BANNER_SECONDS = 2.0


class ReplayError(AnprdError):
    """Unusable replay input (truth file, output name, camera id); one line naming the problem."""


# --- truth and scoring ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TruthPlate:
    """One row of a truth CSV: the plate (normalised), its frame range if given, its line."""

    plate: str
    first_frame: int | None
    last_frame: int | None
    line: int


def read_truth(path: Path) -> list[TruthPlate]:
    """Parse a truth CSV of ``plate[,first_frame,last_frame]`` rows.

    Blank lines are skipped; a first line whose first cell is ``plate`` is a header.

    Raises
    ------
    ReplayError
        ``<file>:<line>: <problem>`` for a bad row, or ``<file>: <problem>`` for a missing or
        unreadable file or one with no plates.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ReplayError(f"{path}: truth file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ReplayError(f"{path}: cannot read truth file: {reason}") from None
    plates: list[TruthPlate] = []
    for line_number, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if line_number == 1 and cells[0].lower() == "plate":
            continue
        where = f"{path}:{line_number}"
        if len(cells) not in (1, 3):
            raise ReplayError(
                f"{where}: expected plate or plate,first_frame,last_frame, got {len(cells)} fields"
            )
        plate = normalise_plate(cells[0])
        if not plate:
            raise ReplayError(f"{where}: empty plate")
        if not set(plate) <= set(ALPHABET):  # a plate no event could ever match
            raise ReplayError(f"{where}: plate {cells[0]!r} has characters other than A-Z and 0-9")
        first = last = None
        if len(cells) == 3:
            try:
                first, last = int(cells[1]), int(cells[2])
            except ValueError:
                raise ReplayError(
                    f"{where}: frame numbers must be integers, got {cells[1]!r}, {cells[2]!r}"
                ) from None
            if first < 0 or last < first:
                raise ReplayError(f"{where}: need 0 <= first_frame <= last_frame, got {first}, {last}")
        plates.append(TruthPlate(plate, first, last, line_number))
    if not plates:
        raise ReplayError(f"{path}: no plates in the truth file")
    return plates


@dataclass(frozen=True)
class ReplayScore:
    """Final events against the truth. missed: truth plates no event matched, in file order."""

    true_positives: int
    false_positives: int
    duplicates: int
    missed: tuple[str, ...]


def _overlap(event: PlateEvent, truth: TruthPlate) -> int:
    if truth.first_frame is None or truth.last_frame is None:
        return 0
    return min(event.last_frame, truth.last_frame) - max(event.first_frame, truth.first_frame)


def score_events(events: Sequence[PlateEvent], truth: Sequence[TruthPlate]) -> ReplayScore:
    """Score final events in order; provisional events are superseded and not scored.

    When a plate has several unmatched truth rows (the same car passing twice), the row whose
    frame range overlaps the event most is taken.
    """
    unmatched = list(truth)
    known = {row.plate for row in truth}
    true_positives = false_positives = duplicates = 0
    for event in events:
        if event.provisional:
            continue
        plate = normalise_plate(event.plate)
        rows = [row for row in unmatched if row.plate == plate]
        if rows:
            unmatched.remove(max(rows, key=lambda row: _overlap(event, row)))
            true_positives += 1
        elif plate in known:
            duplicates += 1
        else:
            false_positives += 1
    return ReplayScore(true_positives, false_positives, duplicates, tuple(row.plate for row in unmatched))


def summary_json(
    events: Sequence[PlateEvent], truth: Sequence[TruthPlate] | None, fps: float
) -> dict[str, Any]:
    """The ``--json`` summary (exactly `SUMMARY_KEYS`). Truth counts are null without a truth file;
    precision is null without events, recall without truth plates."""
    finals = [event for event in events if not event.provisional]
    summary: dict[str, Any] = dict.fromkeys(SUMMARY_KEYS)
    summary["events"] = len(finals)
    summary["fps"] = round(fps, 3)
    if truth is not None:
        score = score_events(finals, truth)
        summary.update(
            truth_plates=len(truth),
            true_positives=score.true_positives,
            false_positives=score.false_positives,
            duplicates=score.duplicates,
            precision=round(score.true_positives / len(finals), 6) if finals else None,
            recall=round(score.true_positives / len(truth), 6) if truth else None,
        )
    return summary


def format_summary(
    video: str, frames: int, summary: dict[str, Any], missed: Sequence[str] = ()
) -> str:
    """The human-readable table printed after the events when ``--json`` is not given."""

    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    rows = [
        ("video", video),
        ("frames", f"{frames} ({summary['fps']:.1f} fps)"),
        ("events", str(summary["events"])),
    ]
    if summary["truth_plates"] is not None:
        rows += [
            ("truth plates", str(summary["truth_plates"])),
            ("true positives", str(summary["true_positives"])),
            ("false positives", str(summary["false_positives"])),
            ("duplicates", str(summary["duplicates"])),
            ("precision", number(summary["precision"])),
            ("recall", number(summary["recall"])),
            ("missed", " ".join(missed) if missed else "-"),
        ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# --- annotation ----------------------------------------------------------------------------------


class _Annotator:
    """Writes processed frames with boxes, track ids, readings, mask and recent events."""

    def __init__(self, path: Path, fps: float, mask: list[np.ndarray]) -> None:
        self._path = path
        self._fps = fps
        self._mask = [contour.astype(np.int32) for contour in mask]
        self._writer: cv2.VideoWriter | None = None
        self._banner: list[tuple[str, int]] = []  # (plate, frames left on screen)

    def write(self, processed: ProcessedFrame) -> None:
        image = processed.frame.image
        if self._writer is None:
            height, width = image.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*_WRITER_CODECS[self._path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self._path), fourcc, self._fps, (width, height))
            if not self._writer.isOpened():
                raise ReplayError(f"{self._path}: cannot write video")
        out = draw_detections(image, processed.detections, list(processed.track_ids))
        if self._mask:
            cv2.polylines(out, self._mask, isClosed=True, color=(0, 0, 255), thickness=2)
        keep = max(1, round(_BANNER_SECONDS * self._fps))
        self._banner = [(plate, left - 1) for plate, left in self._banner if left > 1]
        self._banner += [(event.plate, keep) for event in processed.events]
        lines = [f"frame {processed.frame.sequence}"] + [f"event {plate}" for plate, _ in self._banner]
        for row, text in enumerate(lines):
            y = 24 + 24 * row
            cv2.putText(out, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 4)
            cv2.putText(out, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
        self._writer.write(out)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


# --- the command ---------------------------------------------------------------------------------


def run_source(source: FrameSource, pipeline: CameraPipeline,
               each: Callable[[ProcessedFrame], None] | None = None, max_frames: int | None = None) -> float:
    """Process the frames of a started `source` through `pipeline` in order until it ends (or
    `max_frames`), then flush the pipeline; returns the seconds it took.

    The source decodes in its own thread into a bounded queue (`anprd.grabber.FrameSource`, and
    with ``replay_pace: fast`` it waits rather than drop), so decoding the next frames overlaps the
    detector's work on this one: the detector never waits on the decoder unless decoding is the
    slower stage. `anprd replay` and `make bench` both run this.
    """
    started = time.perf_counter()
    for count, frame in enumerate(source, start=1):
        processed = pipeline.process(frame)
        if each is not None:
            each(processed)
        if max_frames is not None and count >= max_frames:
            break
    pipeline.flush()
    return time.perf_counter() - started


def _probe(video: Path, camera: CameraConfig) -> tuple[int | None, float]:
    """Frame count (None if unknown) and frame rate, for the progress bar and the output video."""
    if video.is_dir():
        return None, camera.folder_fps
    capture = cv2.VideoCapture(str(video))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    return (count if count > 0 else None), usable_frame_rate(fps) or DEFAULT_VIDEO_FPS


def _settings(args: argparse.Namespace
              ) -> tuple[DetectorConfig, TrackerConfig, CascadeConfig, CameraConfig, Path | None]:
    """Detector, tracker, cascade and camera settings from --config, --model and --camera-id."""
    config: AnprdConfig | None = None
    base_dir: Path | None = None
    if getattr(args, "config", None):
        config = load_config(args.config)
        base_dir = Path(args.config).absolute().parent
    detector = config.detector if config else DetectorConfig()
    tracker = config.tracker if config else TrackerConfig()
    cascade = config.cascade if config else CascadeConfig()
    if getattr(args, "model", None):
        detector = detector.model_copy(update={"model": str(Path(args.model).absolute())})
    camera_id = getattr(args, "camera_id", None) or "replay"
    configured = next((c for c in config.cameras if c.id == camera_id), None) if config else None
    try:
        camera = CameraConfig(
            id=camera_id,
            url=str(args.video),
            replay_pace=ReplayPace.FAST,
            queue_size=_REPLAY_QUEUE_SIZE,
            mask=configured.mask if configured else None,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        option = "--camera-id" if error["loc"][:1] == ("id",) else "VIDEO"
        value = error.get("input")
        shown = mask_url(value) if isinstance(value, str) else value
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ReplayError(f"{option}: {message} (got {shown!r})") from None
    if camera.kind.is_live:
        # A stream never ends and cannot be replayed without drops; the daemon is for those.
        raise ReplayError(
            f"{mask_url(camera.url)}: replay reads video files and image folders; "
            f"use anprd run for {camera.kind.value} sources"
        )
    return detector, tracker, cascade, camera, base_dir


def _quiet_video_libraries() -> None:
    """Our one-line SourceError says what FFmpeg and OpenCV would explain in several lines of
    their own; ``OPENCV_FFMPEG_LOGLEVEL`` / ``OPENCV_LOG_LEVEL`` set by the user still win."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read at the first open
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def replay_command(args: argparse.Namespace) -> int:
    """Run ``anprd replay``; returns the exit status (2: bad input, reported as one line)."""
    _quiet_video_libraries()
    try:
        return _replay(args)
    except AnprdError as exc:
        print(f"anprd replay: {exc}", file=sys.stderr, flush=True)
        return 2


def _replay(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    # Check every input before the model loads (seconds).
    truth = read_truth(Path(args.truth)) if getattr(args, "truth", None) else None
    annotate = Path(args.annotate) if getattr(args, "annotate", None) else None
    if annotate is not None and annotate.suffix.lower() not in _WRITER_CODECS:
        raise ReplayError(f"{annotate}: annotated video must end in .mp4 (mp4v) or .avi (MJPG)")
    if annotate is not None and overwritten_input(annotate, [Path(args.video)]) is not None:
        raise ReplayError(f"{annotate}: --annotate would overwrite the video being replayed")
    detector_config, tracker_config, cascade_config, camera, base_dir = _settings(args)
    setup_logging("WARNING")  # the progress bar and the events own the terminal
    video = Path(args.video)
    frame_count, fps = _probe(video, camera)

    source = open_source(camera)  # SourceError: missing, unreadable or corrupt video
    annotator = _Annotator(annotate, fps, mask_contours(camera.mask)) if annotate else None
    try:
        detector = PlateDetector.from_config(detector_config, base_dir)
        warm_up(detector)  # keeps graph building out of the fps figure
        events: list[PlateEvent] = []

        def publish(event: PlateEvent) -> None:
            events.append(event)
            print(json.dumps(event_to_json(event), ensure_ascii=False), flush=True)

        pipeline = CameraPipeline(camera, detector, tracker_config, EventSequencer(), publish,
                                  cascade=cascade_config)
        progress = tqdm(
            total=frame_count, unit="frame", desc=video.name, file=sys.stderr,
            disable=not sys.stderr.isatty(), leave=False,
        )
        def each(processed: ProcessedFrame) -> None:
            if annotator is not None:
                annotator.write(processed)
            progress.update(1)

        with progress:
            elapsed = run_source(source, pipeline, each)
    finally:
        source.stop()
        if annotator is not None:
            annotator.close()
    if source.state is SourceState.FAILED:  # the events so far are out; the summary would mislead
        raise ReplayError(source.failure
                          or f"{video}: decoding failed after {pipeline.frames_processed} frames")
    frames = pipeline.frames_processed
    summary = summary_json(events, truth, frames / elapsed if elapsed > 0 else 0.0)
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        missed = score_events(events, truth).missed if truth is not None else ()
        print(format_summary(str(video), frames, summary, missed), flush=True)
    return 0
