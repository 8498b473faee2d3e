"""Speed and memory figures (`make bench`): the whole pyramid, today's cascade and the new one side by
side in one run; prints them, asserts nothing, and ends with one JSON line (`JSON_KEYS`).

    python -m anprd.bench [--frames DIR] [--count N] [--model DIR] [--baseline-frames N] [--shifts N]
                          [--quick]

Ways to search a frame, measured on the same frames in the same process, taken in turn:

- ``full``: the whole pyramid of every frame (``detector.prefilter: none``, cascade off);
- ``hog``: every frame as a still image with the HOG pre-filter: its regions and the coarse levels
  whole (``detector.prefilter: hog``, ``cascade.enabled: false``);
- ``proposer``: every frame as a still image with the proposal network's regions
  (``detector.prefilter: proposer``; street frames only);
- ``cascade``: the default: the video cascade (motion gate, track-guided search, proposals in the
  moving areas, a whole-frame pass every ``cascade.full_pass_interval_s``).

Measured:

1. On the real 1280x720 street frames (../shared/data/streets, the first `--count`): detection per
   frame with ``full``, ``hog`` and ``proposer`` (a busy frame: a new car, no motion or track to
   help, which is what the cascade's whole-frame pass costs too), and how many plates the whole
   pyramid finds that each also finds (box IoU >= 0.5); with `--shifts N`, that count again on the
   frames moved by N different sub-cell offsets (`SHIFTS`), where luck of the grid evens out.
2. Flat-out replay of the bench clips (`train.clip.BENCH_CLIPS`, rendered when missing), decode to
   published events (`anprd.replay.run_source`): frames per second of each way, the baselines on the
   first `--baseline-frames` frames (they are slow) and the cascade on those and on the whole clip;
   the cascade's events against the 720p clip's truth.
3. Live pace: the 720p clip at its own frame rate, newest frame wins (``replay_pace: realtime``);
   the latency from a frame's capture to the end of its processing, when its events are published.
4. Peak resident memory of the process.

The JSON line's keys are those of the default settings: ``fps_720p``/``fps_1080p`` (the cascade, the
whole clip), ``busy_frame_ms_720p`` (median, on the street frames, of the way of the
default video pre-filter, ``cascade.prefilter``), ``p95_latency_ms``,
``peak_rss_mb``, ``recall_vs_full``, ``clip_precision``/``clip_recall``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from anprd.config.cascade import CascadeConfig
from anprd.config.detector import DetectorConfig
from anprd.config.tracker import TrackerConfig

__all__ = ["JSON_KEYS", "main"]

REPO = Path(__file__).resolve().parent.parent
STREETS = REPO.parent / "shared" / "data" / "streets"
JSON_KEYS = ("fps_720p", "fps_1080p", "busy_frame_ms_720p", "p95_latency_ms", "peak_rss_mb",
             "recall_vs_full", "clip_precision", "clip_recall")
WAYS = ("full", "hog", "cascade")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _street_frames(folder: Path, count: int) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    frames = []
    for path in files:
        image = cv2.imread(str(path))
        if image is not None and image.shape[:2] == (720, 1280):
            frames.append(image)
        if len(frames) == count:
            break
    return frames


def _summary(ms: list[float]) -> str:
    return f"median {statistics.median(ms):.0f} ms, p90 {np.percentile(ms, 90):.0f} ms (n={len(ms)})"


def _way(name: str, model: str) -> tuple[DetectorConfig, CascadeConfig]:
    """Detector and cascade settings of one way to search a frame."""
    if name in ("full", "hog", "proposer"):
        prefilter = "none" if name == "full" else name
        return DetectorConfig(model=model, prefilter=prefilter), CascadeConfig(enabled=False)
    return DetectorConfig(model=model), CascadeConfig()


@dataclass
class _Replay:
    frames: int = 0
    seconds: float = 0.0
    events: list[Any] = field(default_factory=list)
    plans: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _replay(detector, video: Path, way: str, model: str, max_frames: int | None = None,
            realtime: bool = False) -> _Replay:
    """`video` through one camera pipeline as `anprd replay` runs it (decoding in the source's thread,
    events serialised as they are published); `realtime`: at the clip's frame rate, newest frame wins,
    recording each frame's capture-to-published latency."""
    from anprd.config import CameraConfig, ReplayPace
    from anprd.events import EventSequencer, event_to_json
    from anprd.grabber import open_source
    from anprd.pipeline import CameraPipeline
    from anprd.replay import run_source

    detector_config, cascade_config = _way(way, model)
    detector.config = detector_config
    result = _Replay()

    def publish(event) -> None:
        json.dumps(event_to_json(event))  # the wire format's cost, as replay and the daemon pay it
        result.events.append(event)

    def each(processed) -> None:
        result.frames += 1
        if realtime:  # the replay clock stamps each frame with its wall-clock capture time
            result.latencies_ms.append((time.time() - processed.frame.timestamp) * 1000)

    camera = CameraConfig(id="bench", url=str(video), queue_size=1 if realtime else 8,
                          replay_pace=ReplayPace.REALTIME if realtime else ReplayPace.FAST)
    pipeline = CameraPipeline(camera, detector, TrackerConfig(), EventSequencer(), publish,
                              cascade=cascade_config)
    source = open_source(camera)
    try:
        result.seconds = run_source(source, pipeline, each, max_frames)
    finally:
        source.stop()
    if pipeline.cascade is not None:
        result.plans = dict(pipeline.cascade.counts)
    return result


def _street_ways(model: str) -> dict[str, DetectorConfig]:
    """The ways the street frames are searched, the whole pyramid (``full``) first."""
    return {name: _way(name, model)[0] for name in ("full", "hog", "proposer")}


def _street_figures(detector, frames: list[np.ndarray], model: str) -> dict[str, float]:
    """Detection per frame of each way on the street frames, in turn frame by frame, and the share
    of the whole pyramid's plates each finds; the JSON figures are those of the video's default
    pre-filter (`cascade.prefilter`), which a new car's frame is searched with."""
    ways = _street_ways(model)
    # a new car in a video is searched with the cascade's pre-filter (its whole-frame passes too)
    default = CascadeConfig().prefilter
    default = DetectorConfig().prefilter if default == "detector" else default
    for config in ways.values():  # warm-up: graph tracing per new input shape
        detector.config = config
        detector.detect(frames[0])
    kept, total, times = _kept_by_way(detector, ways, frames)
    h, w = frames[0].shape[:2]
    for name, ms in times.items():
        ratio = statistics.median(times["full"]) / statistics.median(ms)
        print(f"street frames {w}x{h}, {name}: {_summary(ms)} -> {1000 / statistics.median(ms):.1f} fps, "
              f"{ratio:.2f}x the whole pyramid's speed; plates the whole pyramid finds that it finds too "
              f"(IoU >= 0.5): {kept[name]}/{total}")
    return {"busy_frame_ms_720p": statistics.median(times[default]),
            "recall_vs_full": kept[default] / total if total else 1.0}


def _kept_by_way(detector, ways: dict[str, DetectorConfig], frames: list[np.ndarray]
                 ) -> tuple[dict[str, int], int, dict[str, list[float]]]:
    """Each way on each frame, in turn frame by frame: how many of the plates the whole pyramid
    (``full``) finds each also finds (box IoU >= 0.5), the whole pyramid's count, and each way's
    milliseconds per frame."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    kept = dict.fromkeys(ways, 0)
    total = 0
    for frame in frames:
        found = {}
        for name, config in ways.items():
            detector.config = config
            start = time.perf_counter()
            found[name] = detector.detect(frame)
            times[name].append((time.perf_counter() - start) * 1000)
        total += len(found["full"])
        for name in ways:
            kept[name] += sum(any(d.box.iou(e.box) >= 0.5 for e in found[name]) for d in found["full"])
    return kept, total, times


# moves of a frame's content (right, down) in pixels: every phase of the 8-pixel grid once in each
# direction, so that a plate found or missed by the luck of where windows fall shows up as such
SHIFTS = ((0, 0), (2, 3), (4, 6), (6, 1), (1, 5), (3, 2), (5, 7), (7, 4))


def shifted(frame: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """`frame`'s content moved `dx` px right and `dy` px down, the same size (edge pixels repeated
    into the gap)."""
    h, w = frame.shape[:2]
    return cv2.copyMakeBorder(frame, dy, 0, dx, 0, cv2.BORDER_REPLICATE)[:h, :w]


def _shifted_recall(detector, frames: list[np.ndarray], model: str, count: int) -> None:
    """`recall_vs_full` of the pre-filters on the street frames moved by each of the first `count`
    `SHIFTS`: the whole pyramid's own finds change with where its windows fall, and one frame's
    figure is a few plates' luck; printed only (the JSON's figure is the frames as they are)."""
    ways = _street_ways(model)
    sums = dict.fromkeys(ways, 0)
    for dx, dy in SHIFTS[:count]:
        kept, total, _ = _kept_by_way(detector, ways, [shifted(frame, dx, dy) for frame in frames])
        print(f"street frames moved ({dx}, {dy}) px: the whole pyramid finds {total} plates; "
              + ", ".join(f"{name} {kept[name]}" for name in ("hog", "proposer")), flush=True)
        for name in ways:  # the whole pyramid keeps its own finds: kept["full"] is its count
            sums[name] += kept[name]
    print(f"street frames over {min(count, len(SHIFTS))} moves: the whole pyramid's {sums['full']} plates; "
          + ", ".join(f"{name} finds {sums[name]} ({sums[name] / max(sums['full'], 1):.3f})"
                      for name in ("hog", "proposer")), flush=True)


def _clips(names: tuple[str, ...]) -> dict[str, tuple[Path, Path]]:
    from train.clip import bench_clip_paths, render_bench_clips

    missing = [n for n in names if not all(p.is_file() for p in bench_clip_paths(n))]
    if missing:
        print(f"rendering the bench clips {', '.join(missing)} (python -m train.clip --bench) ...",
              flush=True)
        render_bench_clips(names=tuple(missing))
    return {name: bench_clip_paths(name) for name in names}


def _clip_figures(detector, clips: dict[str, tuple[Path, Path]], model: str, baseline_frames: int
                  ) -> dict[str, float | None]:
    from anprd.replay import read_truth, score_events

    out: dict[str, float | None] = {}
    for name, (video, truth_path) in clips.items():
        _replay(detector, video, "cascade", model, max_frames=30)  # warm-up: this clip's input shapes
        same: dict[str, _Replay] = {}
        for way in WAYS:  # the same first frames for each way, in turn
            same[way] = _replay(detector, video, way, model, max_frames=baseline_frames)
        print(f"clip {name} ({video.name}), first {same['full'].frames} frames, flat out, decode to events: "
              + ", ".join(f"{way} {r.fps:.1f} fps" for way, r in same.items())
              + f"; cascade/full {same['cascade'].fps / same['full'].fps:.2f}x, "
              f"cascade/hog {same['cascade'].fps / same['hog'].fps:.2f}x")
        whole = _replay(detector, video, "cascade", model)
        truth = read_truth(truth_path)
        finals = [e for e in whole.events if not e.provisional]
        score = score_events(finals, truth)
        precision = score.true_positives / len(finals) if finals else 0.0
        recall = score.true_positives / len(truth)
        print(f"clip {name}, whole ({whole.frames} frames), cascade: {whole.fps:.1f} fps; "
              f"plans {whole.plans}; {len(finals)} events, precision {precision:.3f}, recall {recall:.3f}, "
              f"missed {' '.join(score.missed) or '-'}")
        out[f"fps_{name}"] = whole.fps
        if name == "720p":
            out["clip_precision"], out["clip_recall"] = precision, recall
    return out


def _latency(detector, video: Path, model: str) -> float:
    live = _replay(detector, video, "cascade", model, realtime=True)
    p95 = float(np.percentile(live.latencies_ms, 95)) if live.latencies_ms else float("nan")
    print(f"live pace {video.name}: {live.frames} frames processed in {live.seconds:.1f} s, "
          f"capture to published: median {statistics.median(live.latencies_ms):.0f} ms, p95 {p95:.0f} ms")
    return p95


def _runtime_figures() -> None:
    """The inference runtime's own figures, when this install has them (`anprd.bench_runtime`)."""
    try:
        from anprd.bench_runtime import runtime_figures  # type: ignore[import-not-found]
    except ImportError:
        return
    runtime: Callable[[], object] = runtime_figures
    runtime()  # prints its own table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anprd.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=Path, default=STREETS, help="folder of 1280x720 street frames")
    parser.add_argument("--count", type=int, default=30, help="street frames to use (default 30)")
    parser.add_argument("--model", default=DetectorConfig().model)
    parser.add_argument("--baseline-frames", type=int, default=150,
                        help="clip frames the three ways are compared on (default 150)")
    parser.add_argument("--shifts", type=int, default=0,
                        help=f"also compare the pre-filters on the street frames moved by 0-7 px, this many "
                             f"moves (at most {len(SHIFTS)}; default 0: not run)")
    parser.add_argument("--quick", action="store_true",
                        help="10 street frames, 90 baseline frames, no 1080p clip: a smoke run")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.quick:
        args.count, args.baseline_frames = min(args.count, 10), min(args.baseline_frames, 90)
    if args.count < 1 or args.baseline_frames < 1:
        parser.error("--count and --baseline-frames must be at least 1")
    if not 0 <= args.shifts <= len(SHIFTS):
        parser.error(f"--shifts must be 0 to {len(SHIFTS)}")

    from anprd.detector import PlateDetector

    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}", flush=True)
    start = time.perf_counter()
    detector = PlateDetector.from_config(DetectorConfig(model=args.model), REPO)
    print(f"model load: {time.perf_counter() - start:.1f} s, process max RSS {_rss_mb():.0f} MB")
    figures: dict[str, float | None] = dict.fromkeys(JSON_KEYS)

    frames = _street_frames(args.frames, args.count) if args.frames.is_dir() else []
    if frames:
        figures.update(_street_figures(detector, frames, args.model))
        if args.shifts:
            _shifted_recall(detector, frames, args.model, args.shifts)
    else:
        print(f"no 1280x720 street frames in {args.frames}: busy_frame_ms_720p and recall_vs_full are null")
    clips = _clips(("720p",) if args.quick else ("720p", "1080p"))
    figures.update(_clip_figures(detector, clips, args.model, args.baseline_frames))
    figures["p95_latency_ms"] = _latency(detector, clips["720p"][0], args.model)
    figures["peak_rss_mb"] = _rss_mb()  # the pipeline's, before the runtime comparison loads every runtime
    print(f"process max RSS: {figures['peak_rss_mb']:.0f} MB")
    _runtime_figures()
    print(json.dumps({key: None if figures[key] is None else round(float(figures[key]), 3)
                      for key in JSON_KEYS}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
