"""Memory soak (``make soak``): the replay pipeline over a looped clip for many frames, RSS printed.

Runs what ``anprd replay`` runs (the same settings from ``anprd.replay``: detector, cascade,
tracker, fast pace) over ``samples/clip.mp4`` looped, for ``--frames`` frames (20,000 by default:
about an hour on 2 cores), prints the process's resident memory every ``--every`` frames, and at
the end its growth from frame ``--baseline`` (2,000: after TensorFlow's graphs and caches have
settled) to the last. Exits 1 when the growth reaches ``--max-growth-pct`` (5%). Not in
``make test``: it takes too long for CI.

Usage::

    .venv/bin/python scripts/soak.py [--frames 20000] [--every 1000] [--baseline 2000] [VIDEO]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script from anywhere

__all__ = ["main", "rss_mb"]


def rss_mb() -> float:
    """This process's resident set size in MiB (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", default=str(REPO_ROOT / "samples" / "clip.mp4"),
                        help="clip to loop (default samples/clip.mp4; `python -m train.clip` makes one)")
    parser.add_argument("--frames", type=_count, default=20_000, help="frames to process")
    parser.add_argument("--every", type=_count, default=1000, help="print RSS every this many frames")
    parser.add_argument("--baseline", type=_count, default=2000, help="growth is measured from here")
    parser.add_argument("--max-growth-pct", type=float, default=5.0, help="fail at this growth or more")
    parser.add_argument("--config", help="config.yaml (detector, cascade and tracker sections)")
    parser.add_argument("--model", help="model folder (overrides the config)")
    args = parser.parse_args(argv)
    if args.baseline >= args.frames:
        parser.error(f"--baseline ({args.baseline}) must be below --frames ({args.frames})")

    from anprd.runtime import import_tensorflow

    import_tensorflow()
    from anprd.detector import PlateDetector
    from anprd.errors import AnprdError
    from anprd.events import EventSequencer, event_to_json
    from anprd.grabber import open_source
    from anprd.pipeline import CameraPipeline, warm_up
    from anprd.replay import _settings

    args.camera_id = "soak"
    try:
        detector_config, tracker_config, cascade_config, camera, base_dir = _settings(args)
        camera = camera.model_copy(update={"loop": True})
        detector = PlateDetector.from_config(detector_config, base_dir or REPO_ROOT)
        source = open_source(camera)
    except AnprdError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    warm_up(detector)
    events = 0

    def publish(event: object) -> None:
        nonlocal events
        event_to_json(event)  # type: ignore[arg-type] # serialised as replay does, then dropped
        events += 1

    pipeline = CameraPipeline(camera, detector, tracker_config, EventSequencer(), publish,
                              cascade=cascade_config)
    print(f"soak: {args.frames} frames of {args.video} (looped); RSS {rss_mb():.0f} MiB after loading",
          flush=True)
    print("frames | RSS MiB | fps since last | events", flush=True)
    baseline: float | None = None
    frames = 0
    started = last_time = time.perf_counter()
    try:
        for frame in source:
            pipeline.process(frame)
            frames += 1
            if frames == args.baseline:
                baseline = rss_mb()
            if frames % args.every == 0 or frames == args.frames:
                now = time.perf_counter()
                rate = (frames % args.every or args.every) / (now - last_time)
                last_time = now
                print(f"{frames} | {rss_mb():.0f} | {rate:.1f} | {events}", flush=True)
            if frames >= args.frames:
                break
        pipeline.flush()
    finally:
        source.stop()
    end = rss_mb()
    if baseline is None or frames < args.frames:
        print(f"soak: the source ended after {frames} frames", file=sys.stderr)
        return 2
    growth = 100 * (end - baseline) / baseline
    verdict = "pass" if growth < args.max_growth_pct else "FAIL"
    print(f"RSS from frame {args.baseline} to {frames}: {baseline:.0f} -> {end:.0f} MiB, "
          f"{growth:+.2f}% ({verdict}: < {args.max_growth_pct:g}%); "
          f"{frames / (time.perf_counter() - started):.1f} fps, {events} events", flush=True)
    return 0 if verdict == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
