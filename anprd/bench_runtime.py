"""Inference runtime figures for `make bench` (`runtime_figures`), or alone:

    python -m anprd.bench_runtime [--model DIR] [--image IMAGE]

Prints, for TensorFlow and each installed fast runtime at each exported precision (anprd/runtime.py):
- the detection network on one 1280x720 page, median ms;
- the plate reader on a batch of 16 crops, median ms
(in a process of its own, so that TensorFlow does not stay in the caller's memory); then a cold
`anprd detect` of one 1280x720 image, its wall time and peak RSS, with the default runtime and with
`detector.runtime: tensorflow`. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from anprd.config.detector import DetectorConfig

__all__ = ["cold_detect", "network_figures", "runtime_figures"]

REPO = Path(__file__).resolve().parent.parent
STREETS = REPO.parent / "shared" / "data" / "streets"
REPEATS = 20


def _median_ms(run, batch: np.ndarray, repeats: int = REPEATS) -> float:
    run(batch)  # the first call of a shape plans its kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def network_figures(model: str) -> list[dict]:
    """Per runtime and precision: median ms of the detection network on a 720p page and of the first
    reader on 16 crops, taken in turn so that a busy machine slows all alike. TensorFlow last: once
    imported it stays in memory."""
    from anprd.detector import PlateDetector, resolve_model_dir
    from anprd.runtime import available_runtimes

    model_dir = resolve_model_dir(model, REPO)
    rng = np.random.default_rng(0)
    page = rng.integers(0, 256, (1, 720, 1280, 1)).astype(np.float32)
    crops = rng.integers(0, 256, (16, 32, 128, 1)).astype(np.float32)
    variants = [(r, p) for r in available_runtimes() for p in ("float32", "int8")]
    variants.append(("tensorflow", "float32"))
    rows = []
    for runtime, precision in variants:
        detector = PlateDetector(model_dir, DetectorConfig(model=str(model_dir), runtime=runtime,
                                                           precision=precision, prefilter="none"))
        if not detector.readers:
            continue
        rows.append({"runtime": runtime, "precision": precision,
                     "detection_720p_ms": round(_median_ms(detector.networks.detection, page), 1),
                     "reader_16_ms": round(_median_ms(detector.readers[0], crops), 1)})
    return rows


def _test_image(folder: Path, out_dir: Path) -> Path:
    """A 1280x720 image: a street frame (resized if need be), else a frame of the bundled clip."""
    files = sorted(p for p in folder.glob("*.jpg")) if folder.is_dir() else []
    if files:
        image = cv2.imread(str(files[0]))
    else:
        capture = cv2.VideoCapture(str(REPO / "samples" / "clip.mp4"))
        ok, image = capture.read()
        if not ok:
            raise RuntimeError("no street frame and no readable samples/clip.mp4 to time detect on")
    out = out_dir / "frame-1280x720.jpg"
    cv2.imwrite(str(out), cv2.resize(image, (1280, 720), interpolation=cv2.INTER_AREA))
    return out


def cold_detect(image: Path, model: str, runtime: str = "auto") -> dict:
    """One `anprd detect IMAGE --json` in a fresh process: wall seconds, its peak RSS in MB, plates."""
    with tempfile.TemporaryDirectory() as tmp:
        config = yaml.safe_load((REPO / "config.yaml").read_text())
        config.setdefault("detector", {}).update({"runtime": runtime, "model": str(REPO / model)})
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        # VmHWM, not getrusage's ru_maxrss: a child keeps the forking parent's peak across exec
        command = [sys.executable, "-c", "import sys\nfrom pathlib import Path\nfrom anprd.cli import main\n"
                   "code = main(sys.argv[1:])\n"
                   "status_lines = Path('/proc/self/status').read_text().splitlines()\n"
                   "print([x for x in status_lines if 'VmHWM' in x][0].split()[1], file=sys.stderr)\n"
                   "sys.exit(code)",
                   "detect", str(image), "--json", "--config", str(path)]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"runtime": runtime, "error": done.stderr.strip().splitlines()[-1:]}
    rss_mb = int(done.stderr.strip().splitlines()[-1]) / 1024
    plates = [p["plate"] for line in done.stdout.splitlines() for p in json.loads(line)["plates"]]
    return {"runtime": runtime, "wall_s": round(wall, 2), "peak_rss_mb": round(rss_mb), "plates": len(plates)}


def runtime_figures(model: str = DetectorConfig().model, image: Path | None = None) -> dict:
    """Print the runtime table and the cold `anprd detect` figures; return them."""
    print(f"inference runtimes ({os.cpu_count()} cores), {model}:")
    print(f"  {'runtime':<13}{'precision':<10}{'detection 720p page':>21}{'reader, 16 crops':>18}")
    # in a process of its own: TensorFlow, once imported, would stay in this one's memory figures
    done = subprocess.run([sys.executable, "-m", "anprd.bench_runtime", "--model", model, "--networks-only"],
                          cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"  network timings failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    networks = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else []
    for row in networks:
        print(f"  {row['runtime']:<13}{row['precision']:<10}{row['detection_720p_ms']:>18.1f} ms"
              f"{row['reader_16_ms']:>15.1f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        image = image or _test_image(STREETS, Path(tmp))
        cold = [cold_detect(image, model, runtime) for runtime in ("auto", "tensorflow")]
    for row in cold:
        if "error" in row:
            print(f"  cold `anprd detect` ({row['runtime']}): failed: {row['error']}")
        else:
            print(f"  cold `anprd detect` of one 1280x720 image, runtime {row['runtime']}: "
                  f"{row['wall_s']:.2f} s wall, peak RSS {row['peak_rss_mb']} MB, {row['plates']} plates")
    return {"networks": networks, "cold_detect": cold}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anprd.bench_runtime",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DetectorConfig().model)
    parser.add_argument("--image", type=Path, help="image for the cold detect (default: a 720p street frame)")
    parser.add_argument("--networks-only", action="store_true",
                        help="print only the per-network timings, as one JSON line")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.networks_only:
        print(json.dumps(network_figures(args.model)))
    else:
        runtime_figures(args.model, args.image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
