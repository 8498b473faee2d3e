"""CameraPipeline: mask polygons, tracker wiring, events and crops, with the committed model."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from anprd.config import CameraConfig, TrackerConfig
from anprd.config.detector import DetectorConfig
from anprd.detector import PlateDetector
from anprd.events import EventSequencer
from anprd.pipeline import CameraPipeline, apply_mask, mask_contours
from anprd.types import Box, Detection, Frame, PlateEvent

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / DetectorConfig().model  # the shipped default model


def _detection(x: float, y: float, w: float = 40, h: float = 10, text: str = "AB12CDE") -> Detection:
    return Detection(box=Box(x, y, w, h), presence=0.99, text=text, confidence=0.9)


def _camera(mask: list[list[tuple[float, float]]] | None = None, event_crop: bool = False) -> CameraConfig:
    return CameraConfig(id="gate", url="unused.mp4", mask=mask, event_crop=event_crop)


def test_mask_drops_detections_whose_centre_is_inside_a_polygon() -> None:
    square = [(100.0, 100.0), (200.0, 100.0), (200.0, 200.0), (100.0, 200.0)]
    triangle = [(300.0, 0.0), (400.0, 0.0), (300.0, 100.0)]
    inside = _detection(130, 145)  # centre (150, 150)
    overlapping_but_centred_outside = _detection(185, 100, w=60)  # centre (215, 105)
    in_triangle = _detection(300, 10, w=20, h=10)  # centre (310, 15)
    beside_triangle = _detection(360, 60, w=20, h=10)  # centre (370, 65): past the hypotenuse
    on_edge = _detection(180, 195)  # centre (200, 200): a corner counts as inside
    kept, dropped = apply_mask(
        [inside, overlapping_but_centred_outside, in_triangle, beside_triangle, on_edge],
        mask_contours([square, triangle]),
    )
    assert kept == [overlapping_but_centred_outside, beside_triangle]
    assert dropped == [inside, in_triangle, on_edge]


def test_no_mask_keeps_everything() -> None:
    detections = [_detection(10, 10), _detection(500, 300)]
    assert mask_contours(None) == []
    assert apply_mask(detections, mask_contours(None)) == (detections, [])


# --- with the committed model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector() -> PlateDetector:
    return PlateDetector(MODEL, DetectorConfig())


@pytest.fixture(scope="module")
def plate_scene(detector: PlateDetector) -> tuple[np.ndarray, list[Detection]]:
    """An easy generated scene in which the model finds its one plate and reads it right."""
    from train.fonts import available_fonts
    from train.gen import Backgrounds, builtin_background_dirs, sample_scene

    rng = np.random.default_rng(11)
    backgrounds = Backgrounds(builtin_background_dirs(), rng)
    for _ in range(5):
        image, plates = sample_scene(rng, backgrounds, available_fonts(), size=(640, 360), max_plates=1,
                                     plate_width=(120, 170), difficulty=0.2)
        if len(plates) != 1:
            continue
        (box, text), detections = plates[0], detector.detect(image)
        if detections and detections[0].box.iou(Box(*box)) > 0.5 and detections[0].text == text:
            return image, detections
    pytest.fail("the model read no plate right in five easy generated scenes")


def _frames(image: np.ndarray, count: int) -> list[Frame]:
    return [Frame(image, 1_700_000_000.0 + i / 25, "gate", i) for i in range(count)]


def test_pipeline_tracks_a_plate_and_flush_publishes_its_event_with_a_crop(
    detector: PlateDetector, plate_scene: tuple[np.ndarray, list[Detection]]
) -> None:
    image, expected = plate_scene
    published: list[PlateEvent] = []
    pipeline = CameraPipeline(
        _camera(event_crop=True), detector, TrackerConfig(min_frames=3), EventSequencer(), published.append
    )
    results = [pipeline.process(frame) for frame in _frames(image, 3)]
    assert all(result.detections for result in results)
    assert all(result.inference_s > 0 for result in results)
    first_ids = set(results[0].track_ids)
    assert 0 not in first_ids and set(results[-1].track_ids) == first_ids  # same plate, same track
    assert not published  # the plate is still in view: no final event yet

    events = pipeline.flush()
    assert events and list(events) == published
    event = events[0]
    assert event.camera_id == "gate" and event.frames_seen == 3
    assert (event.first_frame, event.last_frame) == (0, 2)
    # the plate as drawn (and as the detector read it in each frame), the candidates behind it
    assert event.plate == expected[0].text
    assert event.candidates[0].text == event.plate and event.confidence == event.candidates[0].confidence
    crop = cv2.imdecode(np.frombuffer(event.crop_jpeg, np.uint8), cv2.IMREAD_COLOR)
    box = expected[0].box
    assert crop is not None and crop.shape[1] >= box.w * 0.9 and crop.shape[0] >= box.h * 0.9
    assert pipeline.flush() == ()  # nothing left


def test_a_camera_that_goes_quiet_publishes_its_plate_after_max_gap_seconds(
    detector: PlateDetector, plate_scene: tuple[np.ndarray, list[Detection]]
) -> None:
    image, _ = plate_scene
    published: list[PlateEvent] = []
    pipeline = CameraPipeline(_camera(), detector, TrackerConfig(min_frames=3, max_gap_s=2.0),
                              EventSequencer(), published.append)
    frames = _frames(image, 3)
    for frame in frames:
        pipeline.process(frame)
    live = pipeline.active_tracks
    assert pipeline.expire(frames[-1].timestamp + 1.0) == () and pipeline.active_tracks == live >= 1
    events = pipeline.expire(frames[-1].timestamp + 2.5)  # no frame since: the camera is down
    assert events and list(events) == published and all(e.frames_seen == 3 for e in events)
    assert pipeline.active_tracks == 0 and pipeline.flush() == ()


def test_a_tracker_reload_reports_a_car_still_in_view_once(
    detector: PlateDetector, plate_scene: tuple[np.ndarray, list[Detection]]
) -> None:
    image, _ = plate_scene
    published: list[PlateEvent] = []
    pipeline = CameraPipeline(_camera(), detector, TrackerConfig(min_frames=3), EventSequencer(),
                              published.append)
    frames = _frames(image, 6)
    for frame in frames[:3]:
        pipeline.process(frame)
    reported = pipeline.set_tracker_config(TrackerConfig(min_frames=2))  # live tracks flushed
    assert reported and list(reported) == published
    for frame in frames[3:]:  # the same car, still there
        pipeline.process(frame)
    assert pipeline.flush() == () and list(reported) == published


def test_a_mask_over_the_plate_silences_it(
    detector: PlateDetector, plate_scene: tuple[np.ndarray, list[Detection]]
) -> None:
    image, expected = plate_scene
    cx, cy = expected[0].box.center
    mask = [[(max(0.0, cx - 30), max(0.0, cy - 20)), (cx + 30, max(0.0, cy - 20)), (cx + 30, cy + 20),
             (max(0.0, cx - 30), cy + 20)]]
    published: list[PlateEvent] = []
    pipeline = CameraPipeline(_camera(mask), detector, TrackerConfig(min_frames=1), EventSequencer(),
                              published.append)
    for frame in _frames(image, 2):
        result = pipeline.process(frame)
        assert not any(d.box.iou(expected[0].box) > 0.3 for d in result.detections)
        assert any(d.box.iou(expected[0].box) > 0.3 for d in result.masked)
    pipeline.flush()
    assert not any(event.box.iou(expected[0].box) > 0.3 for event in published)

    pipeline.set_camera(_camera(mask=None))  # a reload that removes the mask
    result = pipeline.process(Frame(image, 1_700_000_001.0, "gate", 2))
    assert any(d.box.iou(expected[0].box) > 0.3 for d in result.detections) and not result.masked
    with pytest.raises(ValueError, match="camera id"):
        pipeline.set_camera(CameraConfig(id="other", url="unused.mp4"))


def test_with_the_cascade_a_tracked_plate_is_followed_in_its_track_region(
    detector: PlateDetector, plate_scene: tuple[np.ndarray, list[Detection]]
) -> None:
    from anprd.config import CascadeConfig

    image, expected = plate_scene
    cascade = CascadeConfig(full_pass_interval_s=100, full_pass_slices=1)
    pipeline = CameraPipeline(_camera(), detector, TrackerConfig(min_frames=3), EventSequencer(),
                              lambda event: None, cascade=cascade)
    results = [pipeline.process(frame) for frame in _frames(image, 4)]
    assert [r.plan.reason for r in results] == ["scheduled", "tracks", "tracks", "tracks"]
    for result in results[1:]:  # nothing moves: only the track's region is searched, and it holds the plate
        assert [r.source for r in result.plan.regions] == ["track"] and not result.plan.propose_in
        x0, y0, x1, y1 = result.plan.regions[0].box
        cx, cy = expected[0].box.center
        assert x0 < cx < x1 and y0 < cy < y1
        assert [d.text for d in result.detections] == [expected[0].text]
    assert len(set(results[-1].track_ids)) == 1 and pipeline.flush()[0].plate == expected[0].text
    whole = CameraPipeline(_camera(), detector, TrackerConfig(), EventSequencer(), lambda event: None)
    assert whole.cascade is None and whole.process(_frames(image, 1)[0]).plan is None
