"""The video search cascade: motion gate, track-guided search, the scheduled whole-frame pass, each
stage turned off, the search plan the detector takes, and replay with the cascade against the
whole-frame path on a generated clip (committed model)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from anprd.config import CameraConfig, CascadeConfig, ConfigError, TrackerConfig, load_config
from anprd.config.detector import DetectorConfig
from anprd.detector import PlateDetector
from anprd.events import EventSequencer
from anprd.pipeline import CameraPipeline, mask_contours
from anprd.types import Box, Frame
from cascade import WHOLE_FRAME, FrameCascade, Region, SearchPlan, still_plan
from cascade.motion import MotionGate
from cascade.plan import READ_FULL, READ_NONE, READ_ONE, not_covered
from cascade.tracks import TrackReading, read_mode, track_regions

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / DetectorConfig().model  # the shipped default model
SIZE = (640, 360)  # width, height of the synthetic frames


def _street(seed: int = 0) -> np.ndarray:
    """A textured still background (a fixed camera's view), grayscale."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 200, (SIZE[1] // 8, SIZE[0] // 8), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(small, SIZE, interpolation=cv2.INTER_CUBIC), (0, 0), 2)


def _noisy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise, different in every frame (sigma 2 grey levels, as train.clip draws it)."""
    return np.clip(image + rng.normal(0, 2.0, image.shape), 0, 255).astype(np.uint8)


def _with_car(background: np.ndarray, x: int, y: int = 180, w: int = 120, h: int = 70) -> np.ndarray:
    frame = background.copy()
    frame[y: y + h, x: x + w] = 30  # dark body
    frame[y + 40: y + 55, x + 35: x + 85] = 235  # light plate-sized patch
    return frame


# --- motion gate ---------------------------------------------------------------------------------


def test_the_motion_gate_sees_no_motion_in_a_static_scene_with_sensor_noise() -> None:
    rng = np.random.default_rng(1)
    street = _street()
    gate = MotionGate(width=320, threshold=18, gap=2)
    answers = [gate.update(_noisy(street, rng)) for _ in range(12)]
    assert answers[:2] == [None, None]  # nothing to compare with yet
    assert answers[2:] == [[]] * 10
    assert gate.last_moving_fraction == 0


def test_the_motion_gate_finds_the_moving_car_and_nothing_else() -> None:
    rng = np.random.default_rng(2)
    street = _street()
    gate = MotionGate(width=320, threshold=18, gap=2)
    boxes = None
    for step in range(6):
        x = 100 + 8 * step  # 8 px a frame: a car at a gate
        boxes = gate.update(_noisy(_with_car(street, x), rng))
    assert boxes  # a flat body moves only at its edges: one box or a few along the car
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    car = (100 + 8 * 5, 180, 100 + 8 * 5 + 120, 250)
    # together they hold the car as it is now, and are far smaller than the frame
    assert x0 <= car[0] and y0 <= car[1] and x1 >= car[2] and y1 >= car[3]
    assert (x1 - x0) * (y1 - y0) < 0.2 * SIZE[0] * SIZE[1]


def test_motion_inside_the_camera_mask_is_ignored() -> None:
    rng = np.random.default_rng(3)
    street = _street()
    mask = mask_contours([[(60.0, 150.0), (320.0, 150.0), (320.0, 280.0), (60.0, 280.0)]])
    gate = MotionGate(width=320, threshold=18, gap=2, mask=mask)
    answers = [gate.update(_noisy(_with_car(street, 100 + 8 * step), rng)) for step in range(6)]
    assert answers[-1] == []


# --- track-guided search -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector() -> PlateDetector:
    return PlateDetector(MODEL, DetectorConfig())


@pytest.fixture(scope="module")
def plate_scene(detector: PlateDetector) -> tuple[np.ndarray, Box, str]:
    """A generated scene whose one plate the model finds and reads right on its own."""
    from train.fonts import available_fonts
    from train.gen import Backgrounds, builtin_background_dirs, sample_scene

    rng = np.random.default_rng(11)
    backgrounds = Backgrounds(builtin_background_dirs(), rng)
    for _ in range(5):
        image, plates = sample_scene(rng, backgrounds, available_fonts(), size=(960, 540), max_plates=1,
                                     plate_width=(90, 140), difficulty=0.2)
        if len(plates) != 1:
            continue
        (box, text), found = plates[0], detector.detect(image)
        if found and found[0].box.iou(Box(*box)) > 0.5 and found[0].text == text:
            return image, found[0].box, text
    pytest.fail("the model read no plate right in five easy generated scenes")


def _network_calls(detector: PlateDetector) -> list[tuple[int, int]]:
    """Records the shape of every detection-network call the detector makes from now on."""
    calls: list[tuple[int, int]] = []
    run = type(detector)._network_grid

    def counting(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(image.shape[:2])
        return run(detector, image)

    detector._network_grid = counting  # type: ignore[method-assign]
    return calls


def test_a_tracked_plate_is_found_in_the_next_frame_from_its_crop_alone(
    detector: PlateDetector, plate_scene: tuple[np.ndarray, Box, str]
) -> None:
    image, box, text = plate_scene
    height, width = image.shape[:2]
    # the tracker predicted the plate a few pixels off and a little too wide
    predicted = Box(box.x + 6, box.y - 3, box.w * 1.08, box.h)
    regions = track_regions([predicted], (width, height), windows=2.5, scale_range=1.15)
    assert len(regions) == 1 and regions[0].source == "track"
    rx0, ry0, rx1, ry1 = regions[0].box
    assert (rx1 - rx0) * (ry1 - ry0) < 0.15 * width * height  # a crop, not the frame
    calls = _network_calls(detector)
    try:
        found = detector.detect(image, SearchPlan(regions=tuple(regions), reason="tracks"))
        looked_at = sum(h * w for h, w in calls)
        calls.clear()
        elsewhere = track_regions([Box(20, 20, box.w, box.h)], (width, height))
        assert not detector.detect(image, SearchPlan(regions=tuple(elsewhere), reason="tracks"))
    finally:
        del detector._network_grid
    assert [d.text for d in found] == [text] and found[0].box.iou(box) > 0.5
    # one page of crops, far less than the whole frame's finest pyramid level
    assert 0 < looked_at < (width * 1.6) * (height * 1.6)


def _reader_views(detector: PlateDetector) -> list[int]:
    """Records how many crops each call of the plate readers reads, from now on."""
    views: list[int] = []
    run = type(detector)._reader_reads

    def counting(boxes: list, gray: np.ndarray, invert: bool = False) -> np.ndarray:
        views.append(len(boxes))
        return run(detector, boxes, gray, invert)

    detector._reader_reads = counting  # type: ignore[method-assign]
    return views


def test_a_track_region_says_how_its_plate_is_read(detector: PlateDetector,
                                                   plate_scene: tuple[np.ndarray, Box, str]) -> None:
    image, box, text = plate_scene
    (track,) = track_regions([box], image.shape[1::-1])
    found = {}
    views = _reader_views(detector)
    try:
        for mode in (READ_FULL, READ_ONE, READ_NONE):
            views.clear()
            region = Region(track.box, track.plate_widths, 1.0, "track", read=mode, plate=track.plate)
            found[mode] = (detector.detect(image, SearchPlan(regions=(region,), reason="tracks")), sum(views))
    finally:
        del detector._reader_reads
    (full,), full_views = found[READ_FULL]
    (one,), one_views = found[READ_ONE]
    (followed,), none_views = found[READ_NONE]
    assert full.text == one.text == text and full_views > one_views > 0 == none_views
    assert one.char_probs is not None and full.candidates and one.candidates
    # followed: the verified box and presence, and nothing about the text
    assert followed.box == full.box and followed.presence == full.presence
    assert (followed.text, followed.confidence, followed.candidates) == ("", 0.0, ())
    assert followed.char_probs is None
    # a plate away from the hinted box is read in full
    elsewhere = Region(track.box, track.plate_widths, 1.0, "track", read=READ_NONE,
                       plate=(box.x + 3 * box.w, box.y, box.x + 4 * box.w, box.y2))
    (other,) = detector.detect(image, SearchPlan(regions=(elsewhere,), reason="tracks"))
    assert other.text == text and other.char_probs is not None
    with pytest.raises(ValueError, match="read must be one of"):
        Region(track.box, track.plate_widths, 1.0, "track", read="twice")


def _static_replay(detector: PlateDetector, image: np.ndarray, cascade: CascadeConfig, frames: int = 30
                   ) -> tuple[list, list[int], list[str]]:
    """`frames` copies of `image` at 25 fps through a camera pipeline: the events, the plate readers'
    crops per frame and each frame's read mode of its track region."""
    events: list = []
    pipeline = CameraPipeline(CameraConfig(id="still", url="x.mp4"), detector, TrackerConfig(),
                              EventSequencer(), events.append, cascade=cascade)
    views = _reader_views(detector)
    per_frame, modes = [], []
    try:
        for n in range(frames):
            views.clear()
            processed = pipeline.process(Frame(image, 1000.0 + n / 25, "still", n))
            per_frame.append(sum(views))
            modes.append(",".join(r.read for r in processed.plan.regions if r.source == "track"))
        pipeline.flush()
    finally:
        del detector._reader_reads
    return events, per_frame, modes


def test_a_sure_track_is_read_less_and_still_gives_one_event_with_its_text(
    detector: PlateDetector, plate_scene: tuple[np.ndarray, Box, str]
) -> None:
    image, _, text = plate_scene
    every, every_views, every_modes = _static_replay(detector, image, CascadeConfig(sure_reading=False))
    sparse, sparse_views, sparse_modes = _static_replay(detector, image, CascadeConfig(sure_read_every=4))
    assert [e.plate for e in every if not e.provisional] == [text]
    (event,) = [e for e in sparse if not e.provisional]
    assert event.plate == text and event.frames_seen == every[-1].frames_seen == 30
    assert event.confidence >= CascadeConfig().sure_confidence
    # off: read on every frame, in full; on: in full until sure, then one view every 4th frame
    assert all(v > 0 for v in every_views) and set(every_modes[1:]) == {READ_FULL}
    assert READ_NONE in sparse_modes and READ_ONE in sparse_modes
    assert sum(v == 0 for v in sparse_views) > 15 and sum(sparse_views) < sum(every_views) / 3
    last_full = max(n for n, mode in enumerate(sparse_modes) if mode == READ_FULL)
    cycle = [READ_NONE] * 3 + [READ_ONE]
    assert sparse_modes[last_full + 1:last_full + 9] == cycle * 2


def test_an_empty_plan_runs_no_network(detector: PlateDetector,
                                       plate_scene: tuple[np.ndarray, Box, str]) -> None:
    calls = _network_calls(detector)
    try:
        assert detector.detect(plate_scene[0], SearchPlan(reason="idle")) == []
    finally:
        del detector._network_grid
    assert calls == []


def test_a_still_image_is_searched_as_before(detector: PlateDetector,
                                             plate_scene: tuple[np.ndarray, Box, str]) -> None:
    image = plate_scene[0]
    alone, planned = detector.detect(image), detector.detect(image, still_plan())
    assert [(d.text, d.box) for d in alone] == [(d.text, d.box) for d in planned]
    assert still_plan() == SearchPlan(propose_in=(WHOLE_FRAME,), coarse=(WHOLE_FRAME,))


def test_a_proposal_already_inside_a_track_region_is_not_searched_again() -> None:
    track = Region((100, 100, 400, 200), (80, 110), 1.0, "track")
    inside = Region((200, 130, 300, 170), (70, 120), 0.5)
    narrower = Region((200, 130, 300, 170), (20, 40), 0.5)  # another plate size: searched
    beside = Region((500, 130, 600, 170), (70, 120), 0.5)
    assert not_covered([inside, narrower, beside], (track,)) == [narrower, beside]


# --- the frame cascade: schedule and stages ------------------------------------------------------


def _plans(config: CascadeConfig, frames: list[np.ndarray], fps: float = 10.0,
           predicted: list[Box] | None = None) -> list[SearchPlan]:
    cascade = FrameCascade(config)
    return [cascade.plan(frame, i / fps, predicted or [], DetectorConfig()) for i, frame in enumerate(frames)]


def test_the_whole_frame_pass_runs_at_start_and_when_due() -> None:
    rng = np.random.default_rng(4)
    street = _street()
    frames = [_noisy(street, rng) for _ in range(25)]
    plans = _plans(CascadeConfig(full_pass_interval_s=1.0, full_pass_slices=1), frames)
    reasons = [p.reason for p in plans]
    assert [i for i, r in enumerate(reasons) if r == "scheduled"] == [0, 10, 20]
    assert set(reasons) == {"scheduled", "idle"}
    assert all(p.empty for p in plans if p.reason == "idle")  # nothing moves: no network
    assert plans[10].propose_in == (WHOLE_FRAME,) and plans[10].coarse == (WHOLE_FRAME,)
    # spread over three frames: three bands that together cover the frame, overlapping
    plans = _plans(CascadeConfig(full_pass_interval_s=1.0, full_pass_slices=3), frames)
    assert [i for i, p in enumerate(plans) if p.reason == "scheduled"] == [0, 1, 2, 10, 11, 12, 20, 21, 22]
    bands = [plans[i].propose_in[0] for i in (10, 11, 12)]
    assert all(p.coarse == p.propose_in for p in plans[10:13])
    assert bands[0][1] == 0 and bands[-1][3] == SIZE[1] and all(b[0] == 0 and b[2] == SIZE[0] for b in bands)
    assert all(upper[3] - lower[1] >= 0.25 * SIZE[1] for upper, lower in zip(bands, bands[1:], strict=False))


def test_a_moving_car_bounds_the_search_for_new_plates() -> None:
    rng = np.random.default_rng(5)
    street = _street()
    frames = [_noisy(_with_car(street, 100 + 8 * i), rng) for i in range(6)]
    plan = _plans(CascadeConfig(new_plate_every=1), frames)[-1]
    assert plan.reason == "motion" and len(plan.propose_in) == 1 and plan.coarse == plan.propose_in
    x0, y0, x1, y1 = plan.propose_in[0]
    assert x0 <= 140 and x1 >= 260 and (x1 - x0) * (y1 - y0) < 0.25 * SIZE[0] * SIZE[1]
    assert plan.propose_threshold == CascadeConfig().proposal_threshold


def test_new_plates_are_looked_for_every_few_frames_where_anything_moved_since() -> None:
    rng = np.random.default_rng(7)
    street = _street()
    frames = [_noisy(_with_car(street, 100 + 8 * i), rng) for i in range(10)]
    plans = _plans(CascadeConfig(new_plate_every=3), frames)
    assert [p.reason for p in plans] == ["scheduled"] * 3 + ["idle", "idle", "motion", "idle", "idle",
                                                              "motion", "idle"]
    # the area searched on frame 8 holds the car as it was on frames 6 and 7 as well
    x0, _, x1, _ = plans[8].propose_in[0]
    assert x0 <= 100 + 8 * 6 and x1 >= 100 + 8 * 8 + 120


def test_live_tracks_are_searched_every_frame_and_each_stage_turns_off() -> None:
    rng = np.random.default_rng(6)
    street = _street()
    still = [_noisy(street, rng) for _ in range(5)]
    moving = [_noisy(_with_car(street, 100 + 8 * i), rng) for i in range(5)]
    plate = [Box(300, 200, 90, 20)]
    # tracks: a track region on every frame, motion or not
    plans = _plans(CascadeConfig(), still, predicted=plate)
    assert all(any(r.source == "track" for r in p.regions) for p in plans)
    assert [p.reason for p in plans[3:]] == ["tracks"] * 2  # after the whole-frame pass's 3 bands
    plans = _plans(CascadeConfig(tracks=False), still, predicted=plate)
    assert not any(p.regions for p in plans)
    # motion off: new plates are looked for in the whole frame on every frame
    plans = _plans(CascadeConfig(motion=False, new_plate_every=1, full_pass_slices=1), still)
    assert all(p.propose_in == (WHOLE_FRAME,) for p in plans)
    # proposals off: the moving area itself is searched at every plate width
    last = _plans(CascadeConfig(proposals=False, new_plate_every=1), moving)[-1]
    assert not last.propose_in and [r.source for r in last.regions] == ["motion"]
    widths = DetectorConfig().min_plate_width, DetectorConfig().max_plate_width
    assert last.regions[0].plate_widths == widths
    # the whole cascade off: every frame as a still image
    plans = _plans(CascadeConfig(enabled=False), moving, predicted=plate)
    assert all(p == still_plan() for p in plans)


def test_a_sure_track_is_read_in_one_view_every_few_frames_and_followed_in_between() -> None:
    sure = TrackReading(confidence=0.995, reads=5, unread=0)
    config = CascadeConfig(sure_read_every=3)
    modes = [read_mode(TrackReading(0.995, 5, unread), config.sure_confidence, config.sure_reads, 3)
             for unread in range(3)]
    assert modes == [READ_NONE, READ_NONE, READ_ONE]
    unsure = [TrackReading(0.9, 20, 4), TrackReading(0.999, 4, 4)]  # not sure enough, not read enough
    assert {read_mode(r, config.sure_confidence, config.sure_reads, 3) for r in unsure} == {READ_FULL}
    plate = [Box(300, 200, 90, 20), Box(100, 100, 90, 20)]
    street = _street()
    cascade = FrameCascade(config)
    plans = [cascade.plan(street, n / 10, plate, DetectorConfig(), [sure, unsure[0]]) for n in range(5)]
    assert all([r.read for r in p.regions if r.source == "track"] == [READ_NONE, READ_FULL] for p in plans)
    assert plans[-1].read_hints == (((300, 200, 390, 220), READ_NONE),)
    # turned off, or no readings given: every plate read in full on every frame
    for off, readings in ((CascadeConfig(sure_reading=False), [sure, sure]), (config, None)):
        cascade = FrameCascade(off)
        plans = [cascade.plan(street, n / 10, plate, DetectorConfig(), readings) for n in range(5)]
        assert all(r.read == READ_FULL for p in plans for r in p.regions) and not plans[-1].read_hints


def test_cascade_config_keys(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("cameras: [{id: a, url: x.mp4}]\ncascade: {motion: false, full_pass_interval_s: 5}\n")
    config = load_config(good)
    assert config.cascade.motion is False and config.cascade.full_pass_interval_s == 5
    assert load_config(tmp_path / "good.yaml").cascade.tracks is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras: [{id: a, url: x.mp4}]\ncascade: {full_pass_interval_s: 0}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: cascade.full_pass_interval_s: .*greater than 0"):
        load_config(bad)
    bad.write_text("cameras: [{id: a, url: x.mp4}]\ncascade: {moton: false}\n")
    with pytest.raises(ConfigError, match=r"cascade.moton"):
        load_config(bad)


# --- replay: the cascade against the whole-frame path ---------------------------------------------


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A static-camera clip of a few cars (train.clip), and its truth plates."""
    from train.clip import render_clip

    folder = tmp_path_factory.mktemp("clip")
    summary = render_clip(folder / "clip.mp4", folder / "clip.truth.csv", seed=3, backgrounds=None,
                          seconds=6.0, fps=25.0, size=(960, 540), vehicles=3, static=True,
                          gate_share=0.3, gate_slowdown=2.0)
    assert summary.rows, "the generator fitted no vehicle"
    return summary.video, [row.plate for row in summary.rows]


def _replayed(detector: PlateDetector, video: Path, cascade: CascadeConfig) -> tuple[list[str], dict]:
    from anprd.grabber import open_source
    from anprd.replay import run_source

    events = []
    camera = CameraConfig(id="clip", url=str(video), replay_pace="fast", queue_size=4)
    pipeline = CameraPipeline(camera, detector, TrackerConfig(), EventSequencer(), events.append,
                              cascade=cascade)
    source = open_source(camera)
    try:
        run_source(source, pipeline)
    finally:
        source.stop()
    counts = pipeline.cascade.counts if pipeline.cascade is not None else {}
    return sorted(e.plate for e in events if not e.provisional), counts


def test_replay_with_the_cascade_gives_the_events_of_the_whole_frame_path(
    detector: PlateDetector, short_clip: tuple[Path, list[str]]
) -> None:
    video, truth = short_clip
    whole, whole_plans = _replayed(detector, video, CascadeConfig(enabled=False))
    cascaded, plans = _replayed(detector, video, CascadeConfig())
    assert set(whole_plans) == {"still"}
    assert cascaded == whole
    assert set(cascaded) & set(truth)  # the clip's plates, not an agreement on nothing
    # most frames were searched in part only
    assert plans.get("scheduled", 0) < 0.2 * sum(plans.values())
