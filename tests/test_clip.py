"""The sample-clip renderer (train/clip.py) on tiny clips: format, truth, determinism, plate removal."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from train.clip import (
    _background_files,
    _schedule_sceneries,
    _schedule_vehicles,
    _unique_specs,
    main,
    remove_plates,
    render_clip,
)
from train.fonts import available_fonts

SIZE = (640, 360)  # smallest size at which plates still reach the truth's 60 px
SECONDS, FPS = 4.0, 25.0


def read_truth(path: Path) -> list[tuple[str, int, int]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["plate", "first_frame", "last_frame"]
    return [(plate, int(first), int(last)) for plate, first, last in rows[1:]]


def video_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"cannot open {path}"
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 4 s clip on scikit-image's bundled photos (hermetic: no ../shared needed), via the CLI."""
    folder = tmp_path_factory.mktemp("clip")
    video, truth = folder / "clip.mp4", folder / "clip.truth.csv"
    argv = ["--seed", "3", "--out", str(video), "--seconds", str(SECONDS), "--size", "640x360"]
    assert main(argv + ["--backgrounds", str(_builtin_dir())]) == 0
    return video, truth


def _builtin_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def test_clip_opens_with_expected_frames_and_truth(small_clip: tuple[Path, Path]) -> None:
    video, truth = small_clip
    frames = video_frames(video)
    assert len(frames) == int(SECONDS * FPS)
    assert frames[0].shape == (SIZE[1], SIZE[0], 3)
    rows = read_truth(truth)  # the CLI's default truth path: OUT with .truth.csv
    assert rows, "at least one vehicle fits in 4 s"
    plates = [plate for plate, _, _ in rows]
    assert len(set(plates)) == len(plates)
    for plate, first, last in rows:
        assert re.fullmatch(r"[A-Z0-9]+", plate), plate
        assert 4 <= len(plate) <= 8
        assert 0 <= first <= last < len(frames)
        assert last - first + 1 >= FPS  # readable for a while, not a glimpse


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    def truth_for(seed: int, name: str) -> list[tuple[str, int, int]]:
        video, truth = tmp_path / f"{name}.mp4", tmp_path / f"{name}.csv"
        render_clip(video, truth, seed, None, seconds=3.0, fps=FPS, size=SIZE)
        return read_truth(truth)

    first, again, other = truth_for(5, "a"), truth_for(5, "b"), truth_for(6, "c")
    assert first == again
    assert first != other


def test_a_vehicle_that_cannot_stop_in_a_small_frame_drives_through_and_blocks_no_other() -> None:
    # One vehicle in ~10 is picked to stop; in a 640x360 frame its lane may never show the plate
    # wide enough to stop at. It used to be refused on every try, and no vehicle after it was
    # placed: a short clip came out with an empty truth file.
    files, boxes = _background_files(None)
    frames = int(6 * FPS)
    for seed in range(8, 16):  # the old schedule placed nothing for seeds 10 and 13
        rng = np.random.default_rng(seed)
        sceneries = _schedule_sceneries(files, boxes, SIZE, frames, FPS, rng)
        specs = _unique_specs(rng, 4)
        placed = _schedule_vehicles(specs, available_fonts(), sceneries, SIZE, frames, FPS, rng, 60.0)
        assert placed, f"seed {seed}: no vehicle placed in a 6 s clip"


def test_a_clip_with_no_plate_in_it_is_an_error_not_an_empty_truth_file(tmp_path: Path, capsys) -> None:
    argv = ["--seed", "1", "--out", str(tmp_path / "c.mp4"), "--seconds", "0.5", "--size", "640x360",
            "--backgrounds", str(_builtin_dir())]
    assert main(argv) == 1
    assert "no vehicle's plate fits in 0.5 s at 640x360 (seed 1)" in capsys.readouterr().err


def _street_folder(folder: Path, boxed: bool) -> tuple[Path, tuple[int, int, int, int]]:
    """A smooth 'street' with a high-contrast plate-like patch, boxed in boxes.tsv or not."""
    folder.mkdir()
    yy, xx = np.mgrid[0:720, 0:1280].astype(np.float32)
    image = np.dstack([110 + 20 * xx / 1280 + 10 * yy / 720] * 3).astype(np.uint8)
    box = (560, 420, 160, 40)
    x, y, w, h = box
    checks = ((np.indices((h, w)) // 20).sum(axis=0) % 2 * 255).astype(np.uint8)
    image[y: y + h, x: x + w] = checks[..., None]
    cv2.imwrite(str(folder / "street.png"), image)
    if boxed:
        row = "\t".join(["street.png", *map(str, box)])
        (folder / "boxes.tsv").write_text(f"# file\tx\ty\tw\th\n{row}\n")
    return folder, box


def test_remove_plates_wipes_the_boxed_patch(tmp_path: Path) -> None:
    folder, (x, y, w, h) = _street_folder(tmp_path / "s", boxed=True)
    image = cv2.imread(str(folder / "street.png"))
    cleaned = remove_plates(image, [(x, y, w, h)])
    patch = cleaned[y: y + h, x: x + w].astype(np.float32)
    assert patch.std() < 6, "the checkerboard is gone, not just dimmed"
    assert abs(float(patch.mean()) - float(image[y - 30, x].mean())) < 15  # filled like its surroundings
    outside = (slice(0, 300), slice(0, 400))
    assert np.array_equal(cleaned[outside], image[outside])  # the rest is untouched


@pytest.mark.parametrize("boxed", [True, False])
def test_no_boxed_real_plate_survives_in_the_clip(tmp_path: Path, boxed: bool) -> None:
    folder, _ = _street_folder(tmp_path / "streets", boxed)
    video, truth = tmp_path / "c.mp4", tmp_path / "c.csv"
    render_clip(video, truth, 1, folder, seconds=1.0, fps=FPS, size=SIZE, vehicles=0)
    frames = np.stack(video_frames(video))
    assert read_truth(truth) == []
    # the smooth street stays within ~90..170 (gain drift, noise, codec); the patch is 0 and 255
    extreme = (frames.max(axis=3) > 200).any() or (frames.min(axis=3) < 40).any()
    assert extreme == (not boxed), "boxed patch must be gone; an unboxed one shows (the check works)"


# --- the bench clips -------------------------------------------------------------------------------


def test_a_static_clip_keeps_one_background_and_a_vehicle_in_view(tmp_path: Path) -> None:
    files, boxes = _background_files(_builtin_dir())
    rng = np.random.default_rng(5)
    assert len(_schedule_sceneries(files, boxes, SIZE, 400, FPS, rng, static=True)) == 1
    assert len(_schedule_sceneries(files, boxes, SIZE, 400, FPS, np.random.default_rng(5))) > 1
    summary = render_clip(tmp_path / "static.mp4", tmp_path / "static.truth.csv", seed=4,
                          backgrounds=_builtin_dir(), seconds=6.0, fps=30.0, size=(960, 540), static=True,
                          gate_share=0.5, gate_slowdown=2.0)
    assert summary.rows and summary.fps == 30.0 and summary.frames == 180
    assert 0.6 <= summary.busy_share <= 1.0  # a vehicle in view in most frames
    assert summary.plate_widths[0] >= 60 - 1e-6 and summary.plate_widths[1] > summary.plate_widths[0]
    assert len(video_frames(summary.video)) == 180


def test_bench_clips_already_rendered_are_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from train.clip import BENCH_CLIPS, bench_clip_paths

    for name in BENCH_CLIPS:
        for path in bench_clip_paths(name, tmp_path):
            path.write_bytes(b"kept")
    assert main(["--bench", "--bench-dir", str(tmp_path)]) == 0
    assert all(p.read_bytes() == b"kept" for n in BENCH_CLIPS for p in bench_clip_paths(n, tmp_path))
    assert capsys.readouterr().out.count("there already") == len(BENCH_CLIPS)
    assert set(BENCH_CLIPS) == {"720p", "1080p"}
    assert {spec.size for spec in BENCH_CLIPS.values()} == {(1280, 720), (1920, 1080)}
    assert all(spec.fps == 30 for spec in BENCH_CLIPS.values())


def test_without_bench_seed_and_out_are_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", "x.mp4"])
    assert exit_info.value.code == 2 and "--seed and --out are required" in capsys.readouterr().err
