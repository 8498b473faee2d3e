"""Plate events: built from tracker transitions, and their JSON wire format.

One vehicle passage gives one final event, when its track ends or reaches the tracker's
``max_age_s``. With provisional events on, an earlier event (``provisional: true``) is sent first
and the final event names it in ``supersedes``. Event ids are UUID4 strings; ``sequence`` is a
per-daemon counter (`EventSequencer`, owned by the pipeline and shared by its cameras) so
consumers can see gaps. The publisher adds ``stream``, the identity of the numbering: a sequence
continues across restarts within one stream (kept in the spool, see `anprd.publisher`), so a new
stream tells a consumer that numbering began again, and a gap within a stream that it missed
events. The wire format is described by ``schema/plate_event.schema.json``; version 1.0 (no
``stream``) is still decoded.
"""

from __future__ import annotations

import base64
import binascii
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from anprd.tracker import TrackerUpdate, TrackReport
from anprd.types import Box, Candidate, PlateEvent

__all__ = [
    "READABLE_SCHEMA_VERSIONS",
    "SCHEMA_VERSION",
    "EventEmitter",
    "EventSequencer",
    "event_from_json",
    "event_to_json",
    "final_event",
    "format_timestamp",
    "parse_timestamp",
    "provisional_event",
]

SCHEMA_VERSION = "1.1"
#: Versions `event_from_json` reads: 1.1 added the optional ``stream``.
READABLE_SCHEMA_VERSIONS = frozenset({"1.0", SCHEMA_VERSION})


class EventSequencer:
    """Thread-safe monotonic event counter: 1, 2, 3, ... (one per daemon)."""

    def __init__(self, start: int = 1) -> None:
        if start < 1:
            raise ValueError(f"start must be >= 1, got {start}")
        self._next = start
        self._lock = threading.Lock()

    def next(self) -> int:
        """Take the next sequence number."""
        with self._lock:
            value = self._next
            self._next += 1
            return value

    @property
    def last(self) -> int:
        """The last number handed out (start - 1 before any)."""
        with self._lock:
            return self._next - 1

    def advance_to(self, start: int) -> None:
        """Make the next number at least `start` (never lower it): after a restart the numbering
        goes on from the spool's last event, so the publisher's next number is passed here."""
        with self._lock:
            self._next = max(self._next, start)


def _event(
    report: TrackReport,
    sequencer: EventSequencer,
    *,
    provisional: bool,
    supersedes: str | None,
    crop_jpeg: bytes | None,
) -> PlateEvent:
    track = report.track
    reading = report.reading
    return PlateEvent(
        event_id=str(uuid.uuid4()),
        sequence=sequencer.next(),
        camera_id=track.camera_id,
        plate=reading.text,
        confidence=reading.confidence,
        candidates=reading.candidates,
        box=track.box,
        first_seen=track.first_seen,
        last_seen=track.last_seen,
        first_frame=track.first_frame,
        last_frame=track.last_frame,
        frames_seen=track.frames_seen,
        pattern=report.pattern,
        provisional=provisional,
        supersedes=supersedes,
        crop_jpeg=crop_jpeg,
    )


def provisional_event(
    report: TrackReport, sequencer: EventSequencer, *, crop_jpeg: bytes | None = None
) -> PlateEvent:
    """An early event for a confirmed track still in view."""
    return _event(report, sequencer, provisional=True, supersedes=None, crop_jpeg=crop_jpeg)


def final_event(
    report: TrackReport,
    sequencer: EventSequencer,
    *,
    supersedes: str | None = None,
    crop_jpeg: bytes | None = None,
) -> PlateEvent:
    """The event of an ended track; `supersedes`: its provisional event's id, if one was sent."""
    return _event(report, sequencer, provisional=False, supersedes=supersedes, crop_jpeg=crop_jpeg)


class EventEmitter:
    """Turns each `TrackerUpdate` into events, linking final events to their provisional ones.

    The only state is the provisional event id of each live track (one emitter per tracker).
    """

    def __init__(self, sequencer: EventSequencer) -> None:
        self._sequencer = sequencer
        self._provisional_ids: dict[int, str] = {}

    def events(
        self, update: TrackerUpdate, crops: Mapping[int, bytes] | None = None
    ) -> list[PlateEvent]:
        """Provisional events, then final events, of one update; `crops`: JPEG per track id."""
        crops = crops or {}
        events: list[PlateEvent] = []
        for report in update.provisional:
            track_id = report.track.track_id
            event = provisional_event(report, self._sequencer, crop_jpeg=crops.get(track_id))
            self._provisional_ids[track_id] = event.event_id
            events.append(event)
        for report in update.ended:
            track_id = report.track.track_id
            events.append(
                final_event(
                    report,
                    self._sequencer,
                    supersedes=self._provisional_ids.pop(track_id, None),
                    crop_jpeg=crops.get(track_id),
                )
            )
        for report in update.suppressed:
            self._provisional_ids.pop(report.track.track_id, None)
        return events


def format_timestamp(timestamp: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds and ``Z``: 2024-05-01T12:00:00.250Z."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> float:
    """Inverse of `format_timestamp` (any ISO 8601 time with an offset or ``Z``)."""
    moment = datetime.fromisoformat(text)  # 3.11+ reads "Z"
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return moment.timestamp()


def _box_json(box: Box) -> dict[str, int]:
    x, y, w, h = box.as_list()
    return {"x": x, "y": y, "w": w, "h": h}


def event_to_json(event: PlateEvent, stream: str | None = None) -> dict[str, Any]:
    """The wire format of `event` (a JSON-ready dict, see schema/plate_event.schema.json).

    Parameters
    ----------
    event
        The event.
    stream
        Identity of the numbering `event.sequence` belongs to (the publisher's); None leaves the
        field out (an event that is not part of a published stream, e.g. ``anprd replay``).
    """
    payload: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event.event_id,
    }
    if stream is not None:
        payload["stream"] = stream
    payload |= {
        "sequence": event.sequence,
        "camera_id": event.camera_id,
        "plate": event.plate,
        "confidence": _probability(event.confidence),
        "candidates": [
            {"plate": c.text, "confidence": _probability(c.confidence)} for c in event.candidates
        ],
        "box": _box_json(event.box),
        "first_seen": format_timestamp(event.first_seen),
        "last_seen": format_timestamp(event.last_seen),
        "first_frame": event.first_frame,
        "last_frame": event.last_frame,
        "frames_seen": event.frames_seen,
        "pattern": event.pattern,
        "provisional": event.provisional,
        "supersedes": event.supersedes,
    }
    if event.crop_jpeg is not None:
        payload["crop_jpeg"] = base64.b64encode(event.crop_jpeg).decode("ascii")
    return payload


def _probability(value: float) -> float:
    # Rounded for a compact wire format; clamped against float drift past 1.
    return round(min(max(float(value), 0.0), 1.0), 6)


def event_from_json(payload: Mapping[str, Any]) -> PlateEvent:
    """Parse the wire format (1.0 or 1.1) back into a `PlateEvent` (timestamps to millisecond
    precision). ``stream`` is not part of a `PlateEvent`: read it from the payload.

    Raises
    ------
    ValueError
        On a missing field, a bad value or an unknown schema version.
    """
    try:
        version = payload["schema_version"]
        if version not in READABLE_SCHEMA_VERSIONS:
            raise ValueError(f"unsupported schema_version {version!r}")
        box = payload["box"]
        crop = payload.get("crop_jpeg")
        return PlateEvent(
            event_id=str(payload["event_id"]),
            sequence=int(payload["sequence"]),
            camera_id=str(payload["camera_id"]),
            plate=str(payload["plate"]),
            confidence=float(payload["confidence"]),
            candidates=tuple(
                Candidate(str(c["plate"]), float(c["confidence"])) for c in payload["candidates"]
            ),
            box=Box(float(box["x"]), float(box["y"]), float(box["w"]), float(box["h"])),
            first_seen=parse_timestamp(payload["first_seen"]),
            last_seen=parse_timestamp(payload["last_seen"]),
            first_frame=int(payload["first_frame"]),
            last_frame=int(payload["last_frame"]),
            frames_seen=int(payload["frames_seen"]),
            pattern=payload["pattern"],
            provisional=bool(payload["provisional"]),
            supersedes=payload["supersedes"],
            crop_jpeg=base64.b64decode(crop, validate=True) if crop is not None else None,
        )
    except (KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"malformed plate event: {exc!r}") from exc
