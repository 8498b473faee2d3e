"""The proposal network (cascade/proposer.py): its labelling rule, the committed model, its proposals
on generated scenes, detection through it with the committed CNN, the training data's sources and
bad model folders."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from accuracy_floors import DATA, check, proposal_coverage
from conftest import one_line_model_error
from generated_scenes import generated_scenes, score_detector

from anprd.config import CameraConfig, CascadeConfig, TrackerConfig
from anprd.config.detector import DetectorConfig
from anprd.detector import PlateDetector
from anprd.events import EventSequencer
from anprd.pipeline import CameraPipeline
from cascade import proposer as proposer_module
from cascade.frame import FrameCascade
from cascade.plan import WHOLE_FRAME, Prefilter, SearchPlan, regions_in_areas, still_plan
from cascade.proposer import SEARCH_FILL, WINDOW, PlateProposer, encode_plate, proposal_label
from cascade.train_hog import load_frames
from cascade.train_proposer import real_positive_windows, training_frames

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / DetectorConfig().model
PROPOSER_MODEL = REPO / "models" / "proposer-v1"


@pytest.fixture(scope="module")
def proposer() -> PlateProposer:
    return PlateProposer.load("models/proposer-v1", REPO)


@pytest.fixture(scope="module")
def detector() -> PlateDetector:
    return PlateDetector.from_config(DetectorConfig(prefilter="proposer"), REPO)


@pytest.fixture(scope="module")
def detector_hog_default() -> PlateDetector:
    return PlateDetector.from_config(DetectorConfig(), REPO)


def test_a_proposal_is_a_plate_centred_in_the_window_at_an_octave_and_more_of_sizes():
    def plate(cx: float, cy: float, w: float, h: float) -> tuple[float, float, float, float]:
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2

    assert proposal_label(plate(64, 32, 50, 12))  # 39% wide, centred
    assert proposal_label(plate(64, 32, 100, 22))  # 78% wide
    assert proposal_label(plate(64 + 30, 32 - 14, 50, 12))  # off centre, within a quarter window
    assert not proposal_label(plate(64 + 36, 32, 50, 12))  # centre too far right
    assert not proposal_label(plate(64, 32 + 18, 50, 12))  # centre too low
    assert not proposal_label(plate(64, 32, 30, 8))  # too small
    assert not proposal_label(plate(64, 32, 112, 24))  # too wide
    assert proposal_label(plate(64, 32, 38, 24))  # a narrow 2:1 plate: high enough
    assert not proposal_label(plate(64, 32, 50, 60))  # too high
    # a plate cut by the window's edge still counts when its centre is central: it is searched padded
    assert proposal_label(plate(64 + 30, 32, 100, 20))


def test_the_plate_is_encoded_relative_to_the_window():
    cx, cy, log_w, log_h = encode_plate((32, 24, 96, 40))  # 64 x 16 px, centred
    assert (cx, cy) == (0.0, 0.0)
    assert math.isclose(log_w, math.log(0.5)) and math.isclose(log_h, math.log(0.25))
    assert encode_plate((64, 32, 128, 48))[:2] == (0.25, 0.125)


def test_the_trained_model_loads_and_is_small(proposer):
    assert proposer.model_dir == PROPOSER_MODEL
    assert (PROPOSER_MODEL / "proposer.onnx").stat().st_size < 200_000
    meta = json.loads((PROPOSER_MODEL / "proposer.json").read_text())
    assert meta["command"].startswith("python -m cascade.train_proposer") and meta["seed"] is not None
    assert meta["measured"]["held_out_frames"]["plates"] > 0
    assert all(0 < value < 1 for value in proposer.margins.values())


def test_the_octave_levels_bring_every_searched_plate_width_into_the_band(proposer):
    scales = proposer.scales(720, 1280)
    assert all(a / b == pytest.approx(2) for a, b in zip(scales, scales[1:], strict=False))
    for width in np.geomspace(proposer.min_plate_width, proposer.max_plate_width, 40):
        fills = [width * s / WINDOW[0] for s in scales]
        assert any(SEARCH_FILL[0] - 1e-9 <= f <= SEARCH_FILL[1] + 1e-9 for f in fills), width
    narrow = PlateProposer.load("models/proposer-v1", REPO, min_plate_width=120, max_plate_width=200)
    assert len(narrow.scales(720, 1280)) < len(scales)  # a narrower range searches fewer levels


def test_proposals_cover_generated_plates_and_little_else(proposer):
    plates, covered, area = proposal_coverage(proposer, DATA["proposal_scenes"])
    # Floors in tests/accuracy_floors.py; an untrained network or a wrong box decoding covers few
    # plates, and one that proposes everything covers the whole frame.
    check(proposer.model_dir, "proposals", plates=plates, covered=covered)
    assert area < 0.5, area


def test_each_region_says_the_plate_widths_its_windows_predict(proposer):
    (image, truth), = generated_scenes(seed=5, count=1, size=(960, 540), plate_width=(150, 160),
                                       difficulty=0.2)
    regions = proposer.regions(image[:, :, 0].copy())
    (x, y, w, h), _ = truth[0]
    holding = [r for r in regions if r.box[0] <= x + w / 2 <= r.box[2] and r.box[1] <= y + h / 2 <= r.box[3]]
    assert holding, regions
    lo, hi = holding[0].plate_widths
    assert lo <= w <= hi and hi / lo < 4  # the predicted width, within its margin, not every width


@pytest.mark.parametrize("cells, floor", [(proposer_module.EDGE_CELLS, 0.85), (0, None)])
def test_a_plate_at_the_frame_s_edge_is_proposed(proposer, monkeypatch, cells, floor):
    # Each scene cut 3 px past its plate on one side at a time: without the border past the frame's
    # edges no window is centred on such a plate (measured: 37 of 40 with it, 31 of 40 without).
    monkeypatch.setattr(proposer_module, "EDGE_CELLS", cells)
    held = total = 0
    for image, truth in generated_scenes(seed=41, count=10, size=(960, 540), plate_width=(80, 140),
                                         difficulty=0.2):
        gray = image[:, :, 0]
        (x, y, w, h), _ = truth[0]
        left, top = max(0, x - 3), max(0, y - 3)
        for crop, (px, py) in [(gray[:, left:], (x - left, y)), (gray[:, :x + w + 3], (x, y)),
                               (gray[top:, :], (x, y - top)), (gray[:y + h + 3, :], (x, y))]:
            regions = proposer.regions(np.ascontiguousarray(crop))
            cx, cy = px + w / 2, py + h / 2
            total += 1
            held += any(r.box[0] <= cx <= r.box[2] and r.box[1] <= cy <= r.box[3]
                        and r.plate_widths[0] <= w <= r.plate_widths[1] for r in regions)
    if floor is not None:
        assert held >= floor * total, (held, total)
    else:  # the border is what finds them
        assert held < 0.85 * total, (held, total)


def test_only_the_frame_s_own_edges_get_the_border():
    seen = []

    def regions(crop: np.ndarray, edges: tuple[bool, bool, bool, bool]) -> list:
        seen.append(edges)
        return []

    gray = np.zeros((100, 200), np.uint8)
    regions_in_areas(gray, ((0, 30, 50, 60), (150, 30, 200, 60), (80, 40, 100, 50)), regions, grow=(20, 20))
    assert seen == [(True, False, False, False), (False, False, True, False), (False, False, False, False)]
    regions_in_areas(gray, (WHOLE_FRAME,), regions)
    assert seen[-1] == (True, True, True, True)


def test_no_proposals_on_a_flat_image(proposer):
    assert proposer.propose(np.full((540, 960), 128, np.uint8)) == []


def test_proposals_in_areas_stay_near_those_areas(proposer):
    (image, truth), = generated_scenes(seed=8, count=1, size=(960, 540), plate_width=(110, 130),
                                       difficulty=0.2)
    gray = image[:, :, 0].copy()
    (x, y, w, h), _ = truth[0]
    around = (x - w, y - h, x + 2 * w, y + 2 * h)
    inside = proposer.regions_in(gray, (around,))
    assert inside and all(r.box[0] >= around[0] - 2 * w and r.box[2] <= around[2] + 2 * w for r in inside)
    far = (0.0, 0.0, 80.0, 60.0) if x > 400 else (880.0, 480.0, 960.0, 540.0)
    assert proposer.regions_in(gray, (far,)) == []
    assert proposer.regions_in(gray, (WHOLE_FRAME,)) == proposer.regions(gray)


def test_detector_with_the_proposer_finds_and_reads_plates(detector):
    def proposed_some_region() -> None:
        assert detector.last_regions >= 1

    score = score_detector(detector, generated_scenes(**DATA["scenes"]), after_detect=proposed_some_region)
    check(MODEL, "scenes_proposer", plates=score.plates, found=score.found, read=score.read,
          false_positives=score.false_positives)


def _street_folder(tmp_path: Path) -> Path:
    """A folder as ../shared/data/streets lays it out: training and valid_ frames, boxes.tsv."""
    folder = tmp_path / "streets"
    folder.mkdir()
    rows = ["# file\tx\ty\tw\th"]
    rng = np.random.default_rng(0)
    for name, size in [("train_a.jpg", (720, 1280)), ("train_b.jpg", (720, 1280)),
                       ("train_c.jpg", (480, 640)), ("train_d.jpg", (720, 1280)),
                       ("valid_a.jpg", (720, 1280))]:
        image = rng.integers(0, 255, size, dtype=np.uint8)
        cv2.rectangle(image, (300, 300), (420, 330), 255, -1)
        cv2.imwrite(str(folder / name), image)
        rows.append(f"{name}\t300\t300\t120\t30")
    (folder / "boxes.tsv").write_text("\n".join(rows) + "\n")
    return folder


def test_training_never_sees_the_held_out_or_the_bench_frames(tmp_path):
    folder = _street_folder(tmp_path)
    # the bench measures the first 1280x720 frames by name: here train_a and train_b
    names = sorted(f.path.name for f in training_frames([folder], "valid_", 2))
    assert names == ["train_c.jpg", "train_d.jpg"]
    assert len(load_frames([folder], "valid_")) == 5


def test_real_plate_windows_are_proposals_with_their_plate_encoded(tmp_path):
    frames = training_frames([_street_folder(tmp_path)], "valid_", 0)
    windows, targets = real_positive_windows(np.random.default_rng(1), frames, per_plate=5)
    assert len(windows) == len(targets) == 4 * 5
    assert all(w.shape == (WINDOW[1], WINDOW[0]) for w in windows)
    for window, (label, cx, cy, log_w, log_h) in zip(windows, targets, strict=True):
        assert label == 1.0
        w, h = math.exp(log_w) * WINDOW[0], math.exp(log_h) * WINDOW[1]
        x0, y0 = (0.5 + cx) * WINDOW[0] - w / 2, (0.5 + cy) * WINDOW[1] - h / 2
        assert proposal_label((x0, y0, x0 + w, y0 + h), *WINDOW)
        # the white plate is where its targets say: its pixels are bright, the window's mean is not
        inner = window[round(y0 + h * 0.3): round(y0 + h * 0.7), round(x0 + w * 0.2): round(x0 + w * 0.8)]
        assert inner.mean() > window.mean() + 40


def test_missing_and_corrupt_proposer_models_are_named(tmp_path):
    message = one_line_model_error(lambda: PlateProposer.load(tmp_path / "nothing"))
    assert "proposer.json" in message and "nothing" in message
    message = one_line_model_error(lambda: PlateDetector.from_config(
        DetectorConfig(prefilter="proposer", prefilter_model=str(tmp_path / "nothing"))))
    assert "proposer.json" in message

    broken = tmp_path / "broken"
    shutil.copytree(PROPOSER_MODEL, broken)
    (broken / "proposer.onnx").write_bytes(b"not a network")
    assert str(broken / "proposer.onnx") in one_line_model_error(lambda: PlateProposer(broken))
    (broken / "proposer.onnx").unlink()
    assert str(broken / "proposer.onnx") in one_line_model_error(lambda: PlateProposer(broken))
    shutil.copy(PROPOSER_MODEL / "proposer.onnx", broken / "proposer.onnx")
    meta = json.loads((PROPOSER_MODEL / "proposer.json").read_text())
    (broken / "proposer.json").write_text(json.dumps({**meta, "format": "other/1"}))
    assert "not an anprd proposal network" in one_line_model_error(lambda: PlateProposer(broken))
    (broken / "proposer.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "margins"}))
    assert "margins" in one_line_model_error(lambda: PlateProposer(broken))
    (broken / "proposer.json").write_text("{not json")
    assert str(broken / "proposer.json") in one_line_model_error(lambda: PlateProposer(broken))


def test_video_plans_name_the_cascade_pre_filter_and_photos_keep_the_detector_s():
    gray = np.full((360, 640), 100, np.uint8)
    plan = FrameCascade(CascadeConfig()).plan(gray, 0.0, [], DetectorConfig())
    assert plan.reason == "scheduled" and plan.prefilter == Prefilter("proposer", None)
    custom = CascadeConfig(prefilter="hog", prefilter_model="my/hog")
    assert FrameCascade(custom).plan(gray, 0.0, [], DetectorConfig()).prefilter == Prefilter("hog", "my/hog")
    for own in (CascadeConfig(prefilter="detector"), CascadeConfig(enabled=False)):
        assert FrameCascade(own).plan(gray, 0.0, [], DetectorConfig()).prefilter is None
    assert still_plan().prefilter is None


def test_the_detector_proposes_with_the_pre_filter_a_plan_names(detector_hog_default):
    detector = detector_hog_default
    (image, truth), = generated_scenes(seed=5, count=1, size=(960, 540), plate_width=(150, 160),
                                       difficulty=0.2)
    calls: list[str] = []
    for kind in ("hog", "proposer"):  # count each pre-filter's proposals (instrumented, not replaced)
        plan = SearchPlan(prefilter=Prefilter(kind))
        prefilter = detector._active_prefilter(detector._search_config(plan))
        original = prefilter.regions_in

        def counted(*args, kind=kind, original=original):
            calls.append(kind)
            return original(*args)

        prefilter.regions_in = counted
    try:
        assert detector.config.prefilter == "hog"
        detector.detect(image)
        assert calls == ["hog"]
        found = detector.detect(image, SearchPlan(propose_in=(WHOLE_FRAME,), prefilter=Prefilter("proposer")))
        assert calls == ["hog", "proposer"]
        assert any(d.text == truth[0][1] for d in found)
        detector.detect(image, SearchPlan(propose_in=(WHOLE_FRAME,), prefilter=Prefilter("none")))
        assert calls == ["hog", "proposer"]  # no pre-filter: the whole pyramid
    finally:
        for prefilter in detector._prefilters.values():
            prefilter.__dict__.pop("regions_in", None)


def test_a_camera_whose_cascade_pre_filter_is_missing_fails_when_it_starts(detector_hog_default, tmp_path):
    cascade = CascadeConfig(prefilter_model=str(tmp_path / "nothing"))
    message = one_line_model_error(lambda: CameraPipeline(
        CameraConfig(id="a", url="x.mp4"), detector_hog_default, TrackerConfig(), EventSequencer(),
        lambda event: None, cascade=cascade))
    assert "proposer.json" in message and "nothing" in message
