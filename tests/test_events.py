"""Events from tracker transitions, their JSON wire format and the JSON Schema."""

from __future__ import annotations

import base64
import copy
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from anprd.config.tracker import TrackerConfig
from anprd.ctc import ALPHABET, BLANK
from anprd.events import (
    SCHEMA_VERSION,
    EventEmitter,
    EventSequencer,
    event_from_json,
    event_to_json,
    format_timestamp,
    parse_timestamp,
)
from anprd.tracker import Tracker, TrackerUpdate
from anprd.types import Box, Candidate, Detection, PlateEvent

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schema" / "plate_event.schema.json"
T0 = 1_714_564_800.25  # 2024-05-01T12:00:00.250Z


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def _posteriors(text: str, columns: int = 32) -> np.ndarray:
    probs = np.full((columns, len(ALPHABET) + 1), 0.1 / len(ALPHABET))
    probs[:, BLANK] = 0.9
    for position, symbol in enumerate(text):
        probs[3 * position + 1] = 0.1 / len(ALPHABET)
        probs[3 * position + 1, ALPHABET.index(symbol)] = 0.9
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def _detection(x: float, text: str, pattern: str | None = None) -> Detection:
    return Detection(
        box=Box(x, 120.4, 101.6, 24.5),
        presence=0.95,
        text=text,
        confidence=0.9,
        candidates=(Candidate(text, 0.9),),
        char_probs=_posteriors(text),
        pattern=pattern,
    )


def _event(**changes: Any) -> PlateEvent:
    fields: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "sequence": 1,
        "camera_id": "gate-1",
        "plate": "AB12CDE",
        "confidence": 0.93,
        "candidates": (Candidate("AB12CDE", 0.93), Candidate("AB12CDF", 0.05)),
        "box": Box(10.4, 20.6, 99.5, 25.2),
        "first_seen": T0,
        "last_seen": T0 + 1.5,
        "first_frame": 100,
        "last_frame": 115,
        "frames_seen": 14,
        "pattern": "uk",
    }
    fields.update(changes)
    return PlateEvent(**fields)


def _run(tracker: Tracker, frames: list[list[Detection]]) -> list[TrackerUpdate]:
    return [tracker.update(d, frame_time=T0 + n / 10, frame_number=n) for n, d in enumerate(frames)]


def test_wire_format(validator: jsonschema.Draft202012Validator) -> None:
    payload = event_to_json(_event())
    validator.validate(payload)
    assert payload["schema_version"] == SCHEMA_VERSION == "1.1"
    assert "stream" not in payload  # not a published stream's event (e.g. anprd replay)
    assert payload["first_seen"] == "2024-05-01T12:00:00.250Z"
    assert payload["last_seen"] == "2024-05-01T12:00:01.750Z"
    assert payload["box"] == {"x": 10, "y": 21, "w": 100, "h": 25}
    assert payload["candidates"][1] == {"plate": "AB12CDF", "confidence": 0.05}
    assert payload["supersedes"] is None and payload["provisional"] is False
    assert "crop_jpeg" not in payload
    json.dumps(payload)  # JSON-ready as is


def test_stream_is_stamped_by_the_publisher(validator: jsonschema.Draft202012Validator) -> None:
    stream = str(uuid.uuid4())
    payload = event_to_json(_event(), stream)
    validator.validate(payload)
    assert payload["stream"] == stream
    assert list(payload)[:3] == ["schema_version", "event_id", "stream"]
    assert not validator.is_valid({**payload, "stream": "not-a-uuid"})


def test_version_1_0_events_are_still_read() -> None:
    old = event_to_json(_event())
    old["schema_version"] = "1.0"  # 1.0 had the same fields but stream
    back = event_from_json(old)
    assert back.event_id == old["event_id"] and back.sequence == 1
    assert event_from_json({**old, "schema_version": "1.1", "stream": str(uuid.uuid4())}) == back


def test_crop_is_base64(validator: jsonschema.Draft202012Validator) -> None:
    crop = b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9"
    payload = event_to_json(_event(crop_jpeg=crop))
    validator.validate(payload)
    assert base64.b64decode(payload["crop_jpeg"]) == crop


def test_round_trip() -> None:
    event = _event(crop_jpeg=b"\x00\x01jpeg", provisional=True, pattern=None)
    back = event_from_json(json.loads(json.dumps(event_to_json(event))))
    assert back.first_seen == pytest.approx(event.first_seen, abs=1e-3)
    assert back.box == Box(10, 21, 100, 25)
    assert back.candidates == event.candidates and back.crop_jpeg == event.crop_jpeg
    assert (back.event_id, back.sequence, back.provisional, back.pattern) == (
        event.event_id,
        1,
        True,
        None,
    )
    with pytest.raises(ValueError, match="malformed"):
        event_from_json({"schema_version": "1.0"})
    with pytest.raises(ValueError, match="schema_version"):
        event_from_json({**event_to_json(event), "schema_version": "2.0"})


def test_timestamps() -> None:
    assert format_timestamp(0.0) == "1970-01-01T00:00:00.000Z"
    assert parse_timestamp(format_timestamp(T0)) == pytest.approx(T0)
    with pytest.raises(ValueError, match="offset"):
        parse_timestamp("2024-05-01T12:00:00")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"extra": 1}, "additional property"),
        ({"first_seen": "2024-05-01 12:00:00"}, "not Z"),
        ({"event_id": "not-a-uuid"}, "bad id"),
        ({"confidence": 1.5}, "not a probability"),
        ({"box": {"x": 1.5, "y": 0, "w": 10, "h": 5}}, "box not ints"),
        ({"crop_jpeg": "not base64!"}, "bad base64"),
        ({"schema_version": "2.0"}, "unknown version"),
        ({"candidates": [{"plate": "AB12CDE"}]}, "candidate without confidence"),
    ],
)
def test_schema_rejects(
    validator: jsonschema.Draft202012Validator, change: dict[str, Any], why: str
) -> None:
    payload = {**event_to_json(_event()), **change}
    assert not validator.is_valid(payload), why


@pytest.mark.parametrize("field", ["pattern", "supersedes", "sequence", "candidates", "box"])
def test_schema_requires(validator: jsonschema.Draft202012Validator, field: str) -> None:
    payload = copy.deepcopy(event_to_json(_event()))
    del payload[field]
    assert not validator.is_valid(payload)


def test_sequencer_is_monotonic_across_threads() -> None:
    sequencer = EventSequencer()
    taken: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(200):
            value = sequencer.next()
            with lock:
                taken.append(value)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(taken) == list(range(1, 801)) and sequencer.last == 800
    with pytest.raises(ValueError):
        EventSequencer(start=0)


def test_sequencer_advances_but_never_goes_back() -> None:
    sequencer = EventSequencer()
    sequencer.advance_to(42)  # a restart: the spool's last event was 41
    assert sequencer.next() == 42
    sequencer.advance_to(10)  # a lower number (another spool) never rewinds it
    assert sequencer.next() == 43 and sequencer.last == 43


def test_provisional_then_final_superseding_it(validator: jsonschema.Draft202012Validator) -> None:
    tracker = Tracker(TrackerConfig(min_frames=2, provisional_after_frames=3), camera_id="lane-2")
    emitter = EventEmitter(EventSequencer(start=41))
    frames = [[_detection(20.0 * n, "GH78IJK", pattern="uk")] for n in range(6)]
    frames += [[] for _ in range(15)]
    events = []
    for update in _run(tracker, frames):
        crops = {track.track_id: b"jpeg-bytes" for track in update.tracks}
        events.extend(emitter.events(update, crops))
    provisional, final = events
    assert provisional.provisional and not final.provisional
    assert final.supersedes == provisional.event_id and provisional.supersedes is None
    assert (provisional.sequence, final.sequence) == (41, 42)
    assert provisional.frames_seen == 3 and final.frames_seen == 6
    assert (final.first_frame, final.last_frame) == (0, 5)
    assert final.last_seen == pytest.approx(T0 + 0.5)
    assert final.box == Box(100.0, 120.4, 101.6, 24.5)
    assert final.camera_id == "lane-2" and final.plate == "GH78IJK" and final.pattern == "uk"
    assert provisional.crop_jpeg == b"jpeg-bytes"
    assert final.crop_jpeg is None  # the track was no longer live: the pipeline passed no crop
    for event in events:
        validator.validate(event_to_json(event))
        uuid.UUID(event.event_id, version=4)


def test_pattern_is_the_most_common_for_the_fused_text() -> None:
    tracker = Tracker(TrackerConfig(min_frames=2))
    patterns = ["eu", None, "uk", "uk", None]
    frames = [[_detection(10.0 * n, "MN45OPQ", pattern=p)] for n, p in enumerate(patterns)]
    frames.append([_detection(50.0, "MN45OPO", pattern="fr")])  # another text: not counted
    frames += [[] for _ in range(15)]
    emitter = EventEmitter(EventSequencer())
    events = [e for update in _run(tracker, frames) for e in emitter.events(update)]
    (event,) = events
    assert event.plate == "MN45OPQ" and event.pattern == "uk" and event.sequence == 1


def test_one_frame_false_positive_gives_no_event() -> None:
    tracker = Tracker(TrackerConfig(min_frames=2))
    emitter = EventEmitter(EventSequencer())
    frames = [[_detection(0.0, "FP00000")]] + [[] for _ in range(15)]
    assert [e for update in _run(tracker, frames) for e in emitter.events(update)] == []
