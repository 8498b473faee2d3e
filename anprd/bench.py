"""Speed and memory figures (`make bench`): prints them, asserts nothing.

    python -m anprd.bench [--frames DIR] [--count N] [--model DIR]

Measures, on this machine:
- model load time and process memory after loading;
- whole-frame detection (pyramid + reading) per frame, median and p90, on real 720p street frames
  (../shared/data/streets when present, else frames of the bundled clip), at the default
  min_plate_width and at 100 px;
- the HOG pre-filter (`--prefilter-model`, when present): proposals alone (wall and process CPU time,
  regions per frame), then detection with `prefilter: hog` against the full pyramid on the same
  frames, taken in turn frame by frame, and how many full-pyramid plates the pre-filtered run keeps;
- reading alone: the window model on a batch of 16 plate crops;
- the replay pipeline's throughput on the bundled clip (frames per second, flat out).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from anprd.config.detector import DetectorConfig

REPO = Path(__file__).resolve().parent.parent
STREETS = REPO.parent / "shared" / "data" / "streets"
CLIP = REPO / "samples" / "clip.mp4"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _frames(folder: Path | None, count: int) -> tuple[str, list[np.ndarray]]:
    if folder and folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"})[:count]
        return str(folder), [cv2.imread(str(p)) for p in files]
    capture = cv2.VideoCapture(str(CLIP))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    return str(CLIP), frames


def _timed(fn, items) -> list[float]:
    out = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - start) * 1000)
    return out


def _summary(ms: list[float]) -> str:
    return f"median {statistics.median(ms):.0f} ms, p90 {np.percentile(ms, 90):.0f} ms (n={len(ms)})"


def _bench_prefilter(args: argparse.Namespace, detector, frames: list[np.ndarray], what: str) -> None:
    """HOG proposals alone, then detection with and without the pre-filter, frame by frame in turn."""
    from anprd.detector import ModelError

    hog_config = DetectorConfig(model=args.model, prefilter="hog", prefilter_model=args.prefilter_model,
                                prefilter_threshold=args.prefilter_threshold)
    try:
        prefiltered = type(detector).from_config(hog_config, REPO)
    except ModelError as exc:
        print(f"HOG pre-filter: skipped ({exc})")
        return
    prefilter = prefiltered.prefilter
    grays = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    threshold = args.prefilter_threshold  # passed as the detector's `detect` passes it
    regions = [len(prefilter.regions(g, threshold)) for g in grays]
    wall, cpu = [], []
    for g in grays:
        start, start_cpu = time.perf_counter(), time.process_time()
        prefilter.regions(g, threshold)
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    print(f"HOG pre-filter alone ({prefilter.model_dir.name}, step {prefilter.scale_step:g}, threshold "
          f"{threshold:g}) on {what}: "
          f"{_summary(wall)}; process CPU median {statistics.median(cpu):.0f} ms; regions per frame "
          f"median {statistics.median(regions):.0f}, mean {np.mean(regions):.1f}, max {max(regions)}")
    detector.config = DetectorConfig(model=args.model, prefilter="none")
    prefiltered.detect(frames[0])  # warm-up
    times: dict[str, tuple[list[float], list[float]]] = {"none": ([], []), "hog": ([], [])}
    kept = total = 0
    for frame in frames:
        found = {}
        for name, det in (("none", detector), ("hog", prefiltered)):
            start, start_cpu = time.perf_counter(), time.process_time()
            found[name] = det.detect(frame)
            times[name][0].append((time.perf_counter() - start) * 1000)
            times[name][1].append((time.process_time() - start_cpu) * 1000)
        total += len(found["none"])
        kept += sum(any(d.box.iou(e.box) >= 0.5 for e in found["hog"]) for d in found["none"])
    for name, (ms, cpu_ms) in times.items():
        print(f"detect {what}, prefilter {name}: {_summary(ms)} -> {1000 / statistics.median(ms):.1f} fps; "
              f"process CPU median {statistics.median(cpu_ms):.0f} ms")
    print(f"plates found by the full pyramid also found with prefilter hog (box IoU >= 0.5): {kept}/{total}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anprd.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=Path, default=STREETS if STREETS.is_dir() else None)
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--model", default=DetectorConfig().model)
    parser.add_argument("--prefilter-model", default=DetectorConfig().prefilter_model)
    parser.add_argument("--prefilter-threshold", type=float, default=DetectorConfig().prefilter_threshold)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from anprd.detector import PlateDetector, read_crop_window

    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    start = time.perf_counter()
    detector = PlateDetector.from_config(DetectorConfig(model=args.model, prefilter="none"), REPO)
    print(f"model load: {time.perf_counter() - start:.1f} s, process max RSS {_rss_mb():.0f} MB, "
          f"device {detector.device}")

    source, frames = _frames(args.frames, args.count)
    h, w = frames[0].shape[:2]
    detector.detect(frames[0])  # warm-up: traces the graph once per pyramid shape
    for min_width in (60, 100):
        detector.config = DetectorConfig(model=args.model, min_plate_width=min_width, prefilter="none")
        detector.detect(frames[0])
        ms = _timed(detector.detect, frames)
        print(f"detect {w}x{h} frames from {source}, full pyramid (prefilter none), "
              f"min_plate_width {min_width}: {_summary(ms)} -> {1000 / statistics.median(ms):.1f} fps")

    _bench_prefilter(args, detector, frames, f"{w}x{h} frames from {source}")

    gray = cv2.cvtColor(frames[0], cv2.COLOR_BGR2GRAY)
    boxes = [(100 + 40 * i, 200, 220 + 40 * i, 230) for i in range(16)]
    detector.read(boxes, gray)
    ms = _timed(lambda _: detector.read(boxes, gray), range(20))
    print("read 16 boxes (window-model verification; reader and beam search for those that pass): "
          f"{_summary(ms)}")
    ms = _timed(lambda _: [read_crop_window(gray, b) for b in boxes], range(20))
    print(f"cut 16 crops: {_summary(ms)}")
    print(f"process max RSS after detection: {_rss_mb():.0f} MB")

    if CLIP.is_file():
        start = time.perf_counter()
        # The default detector settings (HOG pre-filter on), as `anprd replay` runs them.
        result = subprocess.run([sys.executable, "-m", "anprd.cli", "replay", str(CLIP), "--json",
                                 "--model", str(REPO / args.model)], capture_output=True, text=True)
        wall = time.perf_counter() - start
        last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
        print(f"replay {CLIP.name} flat out: {last} (wall {wall:.0f} s incl. start-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
