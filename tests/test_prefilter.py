"""The HOG + linear SVM pre-filter: the committed model, its proposals on generated scenes, detection
through it with the committed CNN, bad model folders and the config keys."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from accuracy_floors import DATA, WIDE_PLATES_THRESHOLD, check, proposal_coverage
from conftest import one_line_model_error
from generated_scenes import generated_scenes, score_detector

from anprd.config import ConfigError, load_config
from anprd.config.detector import DetectorConfig
from anprd.detector import (
    PAGE_GAP,
    PAGE_ROW_STEP,
    PAGE_ROWS,
    PAGE_WIDTH,
    PlateDetector,
    _resize,
    grid_shape,
    level_crops,
    pack_crops,
    pyramid_scales,
    whole_scan_scales,
)
from cascade.hog import HogPrefilter, merge_boxes
from cascade.plan import Region

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / DetectorConfig().model  # the shipped default model
HOG_MODEL = REPO / "models" / "hog-v1"


@pytest.fixture(scope="module")
def prefilter() -> HogPrefilter:
    return HogPrefilter.load("models/hog-v1", REPO)


@pytest.fixture(scope="module")
def detector() -> PlateDetector:
    return PlateDetector.from_config(DetectorConfig(prefilter="hog"), REPO)


def test_the_trained_model_loads_and_is_small(prefilter):
    assert prefilter.model_dir == HOG_MODEL
    window = prefilter.params.window
    assert prefilter.hog.winSize == window
    assert len(np.asarray(prefilter.hog.svmDetector).ravel()) == prefilter.hog.getDescriptorSize() + 1
    assert (HOG_MODEL / "hog.yml").stat().st_size < 64_000
    meta = json.loads((HOG_MODEL / "hog.json").read_text())
    assert meta["training"]["seed"] is not None
    assert meta["measured"]["model_step"]["generated_scenes"]["plates"] > 0
    lo, hi = prefilter.plate_fill
    assert 0 < lo < hi <= 1.5


def test_merging_joins_hits_on_one_plate_but_not_small_hits_into_large_regions():
    one_plate = np.array([[0, 0, 100, 40], [8, 0, 108, 40], [16, 4, 116, 44.0]])
    assert [g.tolist() for g in merge_boxes(one_plate)] == [[0, 1, 2]]
    apart = np.array([[0, 0, 100, 40], [200, 0, 300, 40.0]])
    assert sorted(g.tolist() for g in merge_boxes(apart)) == [[0], [1]]
    # a 64 px hit inside a 300 px region: merged, the whole region would be scanned at the fine level
    nested = np.array([[0, 0, 300, 100], [100, 40, 164, 64.0]])
    assert sorted(g.tolist() for g in merge_boxes(nested, np.array([300, 64.0]))) == [[0], [1]]
    assert [g.tolist() for g in merge_boxes(nested)] == [[0, 1]]  # by area alone it is inside: merged


def test_proposals_cover_generated_plates_and_little_else(prefilter):
    plates, covered, area = proposal_coverage(prefilter, DATA["proposal_scenes"])
    # A trained pre-filter covers nearly every plate (floors: tests/accuracy_floors.py); an untrained
    # or broken one (wrong sign, wrong window, wrong box mapping) covers about none, and one that
    # proposes everything covers the whole frame.
    check(prefilter.model_dir, "proposals", plates=plates, covered=covered)
    assert area < 0.75, area


def test_each_level_runs_the_regions_whose_plate_widths_it_sees_on_crops_of_at_least_a_window():
    near = [Region((100, 100, 180, 130), (60, 90), 1.0), Region((200, 110, 280, 140), (60, 90), 0.5)]
    # At scale 1 plates of 77-102 px fill the window's 60-80%: each region gets a 144x80 crop
    # (a window and two grid steps) centred on it, overlapping or not.
    assert level_crops(near, 1.0, 720, 1280) == [(68, 75, 212, 155), (168, 85, 312, 165)]
    assert level_crops(near, 0.5, 720, 1280) == []  # that level sees plates of 154-205 px
    assert level_crops(near[:1], 1.25, 720, 1280) == [(82, 83, 198, 147)]  # 61-82 px: a 116x64 crop
    edge = [Region((0, 0, 40, 20), (60, 90), 1.0)]
    assert level_crops(edge, 1.0, 720, 1280) == [(0, 0, 144, 80)]  # moved inside the frame
    large = [Region((10, 10, 400, 300), (60, 90), 1.0)]
    assert level_crops(large, 1.0, 720, 1280) == [(10, 10, 400, 300)]  # already large enough


def test_crops_are_packed_apart_on_the_grid_into_pages_of_repeating_shapes():
    rng = np.random.default_rng(5)
    heights, widths = rng.integers(64, 400, 60), rng.integers(128, 700, 60)
    sizes = [(int(h), int(w)) for h, w in zip(heights, widths, strict=True)]
    pages = pack_crops(sizes)
    placed = [index for _, crops in pages for index, _ in crops]
    assert sorted(placed) == list(range(len(sizes)))
    for (height, width), crops in pages:
        assert height % PAGE_ROW_STEP == 0 and width == PAGE_WIDTH
        assert height <= PAGE_ROWS
        used = np.zeros((height, width), np.int32)
        for index, (y, x) in crops:
            h, w = sizes[index]
            assert y % 8 == 0 and x % 8 == 0  # a crop's cells are its own grid's
            assert y + h + PAGE_GAP <= height and x + w + PAGE_GAP <= width
            used[y: y + h + PAGE_GAP, x: x + w + PAGE_GAP] += 1
        assert used.max() == 1  # crops and their gaps never overlap
    assert len(pages) >= 2  # 60 crops of this size do not fit one page
    assert pack_crops([]) == []
    with pytest.raises(ValueError, match="does not fit"):  # the detector runs such a crop on its own
        pack_crops([(90, PAGE_WIDTH)])


def test_each_crop_on_a_page_gets_the_grid_it_has_run_alone(detector):
    image, _ = generated_scenes(31, 1, size=(960, 540), plate_width=(70, 160), difficulty=0.2)[0]
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    regions = detector.prefilter.regions(gray, detector.config.prefilter_threshold)
    crops = [_resize(gray[y0:y1, x0:x1], scale) for scale in pyramid_scales(*gray.shape, detector.config)
             for x0, y0, x1, y1 in level_crops(regions, scale, *gray.shape)]
    crops = [crop for crop in crops if crop.shape[0] >= 64 and crop.shape[1] >= 128]
    assert len(crops) >= 5 and len(pack_crops([c.shape for c in crops])[0][1]) >= 5  # sharing a page
    compared = 0
    for crop, (logits, boxes) in zip(crops, detector._paged_grids(crops), strict=True):
        rows, cols = grid_shape(*crop.shape)
        assert logits.shape == (rows, cols) and boxes.shape == (rows, cols, 4)
        if rows < 5 or cols < 8:  # in a small crop nearly every cell sees past the crop's edges
            continue
        # The crop alone, padded as on a page. Its cells see the same window; their view reaches
        # 20-35 px further, where a page holds its neighbours, so the values differ a little, but
        # a crop placed one cell off on its page would match its own grid better shifted by a cell.
        padded = cv2.copyMakeBorder(crop, 0, 8 * (rows + 7) - crop.shape[0] + PAGE_GAP, 0,
                                    8 * (cols + 15) - crop.shape[1] + PAGE_GAP, cv2.BORDER_REPLICATE)
        alone, _ = detector._network_grid(padded)  # one network call on the padded crop alone
        inner = logits[1:-1, 1:-1]

        def mismatch(dr: int, dc: int, alone=alone, rows=rows, cols=cols, inner=inner) -> float:
            return float(np.abs(alone[1 + dr: rows - 1 + dr, 1 + dc: cols - 1 + dc] - inner).mean())

        offsets = {(dr, dc): mismatch(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)}
        assert min(offsets, key=offsets.get) == (0, 0), offsets
        compared += 1
    assert compared >= 2


def test_a_crop_too_large_for_a_page_runs_on_its_own(detector):
    image, _ = generated_scenes(8, 1, size=(1200, 400), plate_width=(80, 200), difficulty=0.2)[0]
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    crops = [gray[:200, :300], gray, gray[200:, 600:]]  # the whole 1200 px is wider than a page
    grids = detector._paged_grids(crops)
    assert [logits.shape for logits, _ in grids] == [grid_shape(*c.shape) for c in crops]
    for shape in [(64, 128), (65, 129), (72, 200), (333, 517)]:  # the network's own grid, as counted
        assert detector._network_grid(np.zeros(shape, np.uint8))[0].shape == grid_shape(*shape)
    np.testing.assert_allclose(grids[1][0], detector._network_grid(gray)[0], atol=1e-4)


def test_no_proposals_on_a_flat_image(prefilter):
    assert prefilter.propose(np.full((540, 960), 128, np.uint8)) == []


def test_detector_with_prefilter_finds_and_reads_plates(detector):
    def proposed_some_region() -> None:
        assert detector.last_regions >= 1

    score = score_detector(detector, generated_scenes(**DATA["scenes"]), after_detect=proposed_some_region)
    # The scenes of tests/test_detector.py, with the model's own figures through the pre-filter.
    check(MODEL, "scenes_hog", plates=score.plates, found=score.found, read=score.read,
          false_positives=score.false_positives)


def test_a_flat_image_gives_no_region_and_no_plate(detector):
    assert detector.detect(np.full((360, 640, 3), 128, np.uint8)) == []
    assert detector.last_regions == 0


def test_only_the_levels_for_plates_at_least_the_full_scan_width_are_scanned_whole():
    scales = pyramid_scales(720, 1280, DetectorConfig())
    whole = whole_scan_scales(scales, 150)
    # A level at scale s brings plates of 0.6 * 128 / s to 0.8 * 128 / s pixels into the window.
    assert whole == [s for s in scales if 76.8 / s >= 150] and 0 < len(whole) < len(scales)
    assert whole == scales[len(scales) - len(whole):]  # the coarsest levels
    assert whole_scan_scales(scales, DetectorConfig().max_plate_width + 1) == []


def test_wide_plates_are_found_where_the_prefilter_proposes_nothing(detector):
    def proposed_nothing() -> None:
        assert detector.last_regions == 0

    scenes = generated_scenes(**DATA["wide_plates"])
    default = detector.config
    try:  # a margin no window reaches: the pre-filter proposes no region, only whole levels find plates
        detector.config = DetectorConfig(prefilter="hog", prefilter_threshold=WIDE_PLATES_THRESHOLD)
        whole = score_detector(detector, scenes, after_detect=proposed_nothing)
        detector.config = DetectorConfig(prefilter="hog", prefilter_threshold=WIDE_PLATES_THRESHOLD,
                                         prefilter_full_scan_width=DetectorConfig().max_plate_width + 1)
        regions_only = score_detector(detector, scenes, after_detect=proposed_nothing)
    finally:
        detector.config = default
    assert regions_only.found == 0
    check(MODEL, "wide_plates_whole_levels", plates=whole.plates, found=whole.found, read=whole.read,
          false_positives=whole.false_positives)


def test_missing_and_corrupt_hog_models_are_named(tmp_path):
    message = one_line_model_error(lambda: HogPrefilter.load(tmp_path / "nothing"))
    assert "hog.json" in message and "nothing" in message
    message = one_line_model_error(lambda: PlateDetector.from_config(
        DetectorConfig(prefilter="hog", prefilter_model=str(tmp_path / "nothing"))))
    assert "hog.json" in message

    broken = tmp_path / "broken"
    shutil.copytree(HOG_MODEL, broken)
    (broken / "hog.yml").write_text("%YAML:1.0\nnot: a detector\n")
    assert str(broken / "hog.yml") in one_line_model_error(lambda: HogPrefilter(broken))
    (broken / "hog.yml").unlink()
    assert str(broken / "hog.yml") in one_line_model_error(lambda: HogPrefilter(broken))
    shutil.copy(HOG_MODEL / "hog.yml", broken / "hog.yml")
    (broken / "hog.json").write_text("{not json")
    assert str(broken / "hog.json") in one_line_model_error(lambda: HogPrefilter(broken))


def _config_error(tmp_path: Path, detector_yaml: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(f"cameras: [{{id: a, url: rtsp://cam/1}}]\ndetector:\n{detector_yaml}")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_prefilter_config_keys(tmp_path):
    assert DetectorConfig().prefilter == "hog"  # the default, chosen by measurement (README "Speed")
    message = _config_error(tmp_path, "  prefilter: fast\n")
    assert "detector.prefilter: input should be 'none', 'hog' or 'proposer' (got 'fast')" in message
    assert "detector.prefilter_threshold" in _config_error(tmp_path, "  prefilter_threshold: high\n")
    assert "detector.prefilter_modle: unknown key" in _config_error(tmp_path, "  prefilter_modle: x\n")
    path = tmp_path / "ok.yaml"
    path.write_text("cameras: [{id: a, url: rtsp://cam/1}]\n"
                    "detector: {prefilter: hog, prefilter_threshold: -0.2}\n")
    config = load_config(path).detector
    assert (config.prefilter, config.prefilter_folder, config.prefilter_threshold) == (
        "hog", "models/hog-v1", -0.2)
