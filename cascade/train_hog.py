"""Train the HOG + linear SVM plate pre-filter that `cascade/hog.py` runs (`detector.prefilter: hog`).

    python -m cascade.train_hog --out models/hog-v1 --seed 1 --backgrounds ../shared/data/streets

1. Positives: plates the generator (`train.gen.sample_scene`) composites onto backgrounds with a
   known box, plus the boxed real plates of every `--backgrounds` folder that has a boxes.tsv (for
   presence only: the text is not needed). Each is cut out with context at the window's aspect, the
   plate covering `FILL` of the width (less for tall plates, which are limited by the height), at a
   random offset, and resized to the HOG window.
2. Negatives: random crops of the same photos (the scikit-image photos and the `--backgrounds`
   folders) that stay clear of every boxed plate.
3. A linear SVM (L2-regularised squared hinge, solved in the primal with SciPy's L-BFGS) is trained,
   then `--rounds` rounds of hard-negative mining scan the training frames and `--mining-scenes`
   generated scenes with the pre-filter itself and add the windows it wrongly fires on (clear of
   boxed plates) before training again.
4. Calibration: on the training frames and on generated scenes, each plate's best covering hit is
   found; the margin at which `--target-recall` of them are still covered is folded into the bias,
   so hit threshold 0 (the `detector.prefilter_threshold` default) is that operating point.
5. Held-out measures go into hog.json: proposal recall (a plate counts when it lies fully inside a
   proposed region) on generated scenes of another seed and on the `valid_*` frames of the
   backgrounds folders (never used for training), regions and false regions per frame, and time.

Frames whose names start with `--holdout-prefix` (default `valid_`, as in ../shared/data/streets) are
kept out of training, mining and calibration. ../shared/data/real is evaluation data: never pass it.
The run is deterministic for a seed; the model is `hog.yml` (OpenCV's format) and `hog.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from cascade.hog import DEFAULT_PAD, HOG_FORMAT, HogParams, HogPrefilter

__all__ = ["FILL", "Frame", "context_box", "cut_window", "main", "train_linear_svm"]

FILL = (0.6, 0.85)  # plate width / window width of the positives (wide plates)
HEIGHT_FILL = 0.8  # the largest plate height / window height (tall plates are limited by this)
MIN_MEASURED_WIDTH = 60  # real plates narrower than this are left out of the recall figures
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
Box = tuple[float, float, float, float]


@dataclass
class Frame:
    """A background photo and its boxed plates (x0, y0, x1, y1); `held_out` frames are for measuring."""

    path: Path
    plates: list[Box]
    held_out: bool = False

    def gray(self) -> np.ndarray:
        image = cv2.imread(str(self.path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise RuntimeError(f"{self.path}: cannot decode image")
        return image


# --------------------------------------------------------------------------------------------------
# Geometry shared by positives, negatives and the measures
# --------------------------------------------------------------------------------------------------
def context_box(plate: Box, window: tuple[int, int], fill: float, shift: tuple[float, float] = (0.0, 0.0)
                ) -> Box:
    """The window-aspect box around `plate` in which the plate covers `fill` of the width (or
    HEIGHT_FILL of the height, whichever is larger); `shift` in [-1, 1] moves it off centre while
    keeping the plate inside."""
    x0, y0, x1, y1 = plate
    pw, ph = max(1.0, x1 - x0), max(1.0, y1 - y0)
    aspect = window[0] / window[1]
    cw = max(pw / fill, ph * aspect / HEIGHT_FILL)
    ch = cw / aspect
    cx = (x0 + x1) / 2 + shift[0] * (cw - pw) / 2
    cy = (y0 + y1) / 2 + shift[1] * (ch - ph) / 2
    return cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2


def cut_window(gray: np.ndarray, box: Box, window: tuple[int, int]) -> np.ndarray:
    """`box` of `gray` resized to the window; parts outside the image repeat its border."""
    h, w = gray.shape
    x0, y0 = math.floor(box[0]), math.floor(box[1])
    x1, y1 = max(x0 + 1, math.ceil(box[2])), max(y0 + 1, math.ceil(box[3]))
    region = gray[max(0, y0): max(0, min(h, y1)), max(0, x0): max(0, min(w, x1))]
    if region.size == 0:
        return np.zeros((window[1], window[0]), np.uint8)
    region = cv2.copyMakeBorder(region, max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w),
                                cv2.BORDER_REPLICATE)
    shrink = region.shape[1] > window[0]
    return cv2.resize(region, window, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _overlaps(box: Box, plates: list[Box], margin: float = 0.3) -> bool:
    """True when `box` touches a plate grown by `margin` of its size on every side."""
    for x0, y0, x1, y1 in plates:
        mx, my = (x1 - x0) * margin, (y1 - y0) * margin
        if box[0] < x1 + mx and x0 - mx < box[2] and box[1] < y1 + my and y0 - my < box[3]:
            return True
    return False


def _contains(outer: Box, inner: Box) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def load_frames(folders: list[Path], holdout_prefix: str) -> list[Frame]:
    """Every photo in `folders` (sorted), with the plates of a boxes.tsv there (file, x, y, w, h)."""
    from train.gen import _read_plate_boxes

    frames = []
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"background folder not found: {folder}")
        known = _read_plate_boxes(folder)
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                plates = [(float(x), float(y), float(x + w), float(y + h))
                          for x, y, w, h in known.get(path.name, [])]
                held_out = bool(holdout_prefix) and path.name.startswith(holdout_prefix)
                frames.append(Frame(path, plates, held_out))
    return frames


def synthetic_scenes(rng: np.random.Generator, count: int, size: tuple[int, int],
                     plate_width: tuple[float, float], max_plates: int, camera: bool, backgrounds, fonts
                     ) -> Iterator[tuple[np.ndarray, list[Box]]]:
    """`count` generated grayscale scenes (`train.gen.sample_scene`, difficulty 0.2-1) with their plate
    boxes; `camera` adds the generator's camera effects (blur, low resolution, uneven light, night,
    noise, JPEG) on top."""
    from train.gen import _apply_camera, sample_scene

    for _ in range(count):
        image, plates = sample_scene(rng, backgrounds, fonts, size=size, max_plates=max_plates,
                                     plate_width=plate_width, difficulty=float(rng.uniform(0.2, 1.0)))
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if camera:
            night = bool(rng.random() < 0.15)
            gray = _apply_camera(gray.astype(np.float32), rng, float(rng.uniform(0.1, 0.8)), night)
        yield gray, [(float(x), float(y), float(x + w), float(y + h)) for (x, y, w, h), _ in plates]


def _positive_crop(rng: np.random.Generator, gray: np.ndarray, plate: Box, window: tuple[int, int]
                   ) -> np.ndarray:
    fill = float(rng.uniform(*FILL))
    shift = (float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.5, 0.5)))
    return cut_window(gray, context_box(plate, window, fill, shift), window)


def positive_windows(rng: np.random.Generator, count: int, frames: list[Frame], window: tuple[int, int],
                     backgrounds, fonts) -> tuple[list[np.ndarray], int, int]:
    """About `count` generated plates (half small ones under camera effects, half in 640x360 scenes
    of up to three plates) and two crops of every boxed real plate at least 60% of the window wide
    in the training frames; returns (windows, generated, real)."""
    windows: list[np.ndarray] = []
    for gray, plates in synthetic_scenes(rng, count // 2, (288, 160), (40, 120), 1, True, backgrounds, fonts):
        windows += [_positive_crop(rng, gray, p, window) for p in plates]
    for gray, plates in synthetic_scenes(rng, count, (640, 360), (60, 200), 3, False, backgrounds, fonts):
        windows += [_positive_crop(rng, gray, p, window) for p in plates]
        if len(windows) >= count:
            break
    generated = len(windows)
    for frame in frames:
        if frame.held_out or not frame.plates:
            continue
        gray = frame.gray()
        for plate in frame.plates:
            if plate[2] - plate[0] >= 0.6 * window[0]:
                windows += [_positive_crop(rng, gray, plate, window) for _ in range(2)]
    return windows, generated, len(windows) - generated


def negative_windows(rng: np.random.Generator, count: int, frames: list[Frame], window: tuple[int, int]
                     ) -> list[np.ndarray]:
    """`count` random crops, 1x to 12x the window, of the training frames, clear of boxed plates."""
    usable = [f for f in frames if not f.held_out]
    per_image = max(1, math.ceil(count / len(usable)))
    windows: list[np.ndarray] = []
    for index in rng.permutation(len(usable)):
        frame = usable[index]
        gray = frame.gray()
        h, w = gray.shape
        taken = 0
        for _ in range(per_image * 5):
            if taken == per_image:
                break
            zoom = math.exp(rng.uniform(0, math.log(12)))
            cw = min(window[0] * zoom, w, h * window[0] / window[1])
            ch = cw * window[1] / window[0]
            x, y = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
            box = (x, y, x + cw, y + ch)
            if not _overlaps(box, frame.plates):
                windows.append(cut_window(gray, box, window))
                taken += 1
    return windows[:count]


# --------------------------------------------------------------------------------------------------
# The classifier
# --------------------------------------------------------------------------------------------------
def describe(hog: cv2.HOGDescriptor, windows: list[np.ndarray]) -> np.ndarray:
    """N x D HOG descriptors (float64) of window-sized uint8 images."""
    return np.stack([hog.compute(w).ravel() for w in windows]).astype(np.float64)


def train_linear_svm(x: np.ndarray, y: np.ndarray, lam: float, iterations: int = 1000
                     ) -> tuple[np.ndarray, float]:
    """Linear SVM in the primal: minimise lam/2 |w|^2 + sum_i a_i max(0, 1 - y_i (w.x_i + b))^2, the two
    classes weighted equally (a_i = 1 / (2 * class size)). Returns (w, b); deterministic."""
    from scipy.optimize import minimize

    n, d = x.shape
    weight = np.where(y > 0, 0.5 / max(1, (y > 0).sum()), 0.5 / max(1, (y < 0).sum()))

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d], theta[d]
        slack = np.maximum(0.0, 1 - y * (x @ w + b))
        g = -2 * weight * slack * y
        loss = float((weight * slack * slack).sum() + 0.5 * lam * w @ w)
        return loss, np.concatenate([x.T @ g + lam * w, [g.sum()]])

    result = minimize(objective, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                      options={"maxiter": iterations})
    return result.x[:d], float(result.x[d])


def _detector(hog: cv2.HOGDescriptor, w: np.ndarray, b: float) -> cv2.HOGDescriptor:
    hog.setSVMDetector(np.concatenate([w, [b]]).astype(np.float32))
    return hog


def mine_hard_negatives(prefilter: HogPrefilter, images: Iterable[tuple[np.ndarray, list[Box]]],
                        per_image: int) -> list[np.ndarray]:
    """Windows the pre-filter fires on (margin above its threshold) in (gray, plate boxes) images,
    clear of the plates; at most `per_image` per image, the highest margins first."""
    out = []
    for gray, plates in images:
        boxes, _ = prefilter.windows(gray)  # best first, in a fixed order
        taken = 0
        for box in boxes:
            if taken == per_image:
                break
            if not _overlaps(tuple(box), plates):
                out.append(cut_window(gray, tuple(box), prefilter.params.window))
                taken += 1
    return out


# --------------------------------------------------------------------------------------------------
# Calibration and measures
# --------------------------------------------------------------------------------------------------
def best_covers(prefilter: HogPrefilter, gray: np.ndarray, plates: list[Box], floor: float
                ) -> list[tuple[float, float]]:
    """Per plate: (best margin of a hit whose padded box holds the plate and whose window is 1-3 times
    the plate's width, plate width / that window's width); (-inf, nan) when no hit above `floor` does."""
    boxes, scores = prefilter.windows(gray, floor)
    width = boxes[:, 2] - boxes[:, 0]
    padded = boxes + np.outer(width * prefilter.pad, [-1, -1, 1, 1])
    out = []
    for plate in plates:
        fill = (plate[2] - plate[0]) / np.maximum(width, 1)
        ok = ((padded[:, 0] <= plate[0]) & (padded[:, 1] <= plate[1]) & (padded[:, 2] >= plate[2])
              & (padded[:, 3] >= plate[3]) & (fill >= 1 / 3) & (fill <= 1))
        if not ok.any():
            out.append((-math.inf, math.nan))
            continue
        best = int(np.flatnonzero(ok)[np.argmax(scores[ok])])
        out.append((float(scores[best]), float(fill[best])))
    return out


@dataclass
class Measure:
    """Proposal figures over a set of images."""

    images: int = 0
    plates: int = 0
    inside: int = 0  # plate fully inside a region
    centre_inside: int = 0  # plate centre inside a region
    regions: int = 0
    false_regions: int = 0  # regions holding no boxed plate's centre
    area: float = 0.0  # summed fraction of the image covered by regions
    cpu_ms: list[float] = field(default_factory=list)

    def add(self, prefilter: HogPrefilter, gray: np.ndarray, plates: list[Box], measured: list[Box]) -> None:
        start = time.process_time()
        regions = prefilter.regions(gray)
        self.cpu_ms.append((time.process_time() - start) * 1000)
        self.images += 1
        self.regions += len(regions)
        centres = [((p[0] + p[2]) / 2, (p[1] + p[3]) / 2) for p in plates]
        for r in regions:
            x0, y0, x1, y1 = r.box
            self.area += (x1 - x0) * (y1 - y0) / gray.size
            self.false_regions += not any(x0 <= cx <= x1 and y0 <= cy <= y1 for cx, cy in centres)
        for plate in measured:
            self.plates += 1
            self.inside += any(_contains(r.box, plate) for r in regions)
            cx, cy = (plate[0] + plate[2]) / 2, (plate[1] + plate[3]) / 2
            self.centre_inside += any(r.box[0] <= cx <= r.box[2] and r.box[1] <= cy <= r.box[3]
                                      for r in regions)

    def summary(self) -> dict[str, float | int]:
        n = max(1, self.images)
        return {"images": self.images, "plates": self.plates,
                "recall_inside": round(self.inside / max(1, self.plates), 4),
                "recall_centre": round(self.centre_inside / max(1, self.plates), 4),
                "regions_per_image": round(self.regions / n, 2),
                "false_regions_per_image": round(self.false_regions / n, 2),
                "region_area_fraction": round(self.area / n, 4),
                "hog_cpu_ms_median": round(statistics.median(self.cpu_ms or [0.0]), 1)}


def eval_scenes(seed: int, count: int, folders: list[Path]) -> list[tuple[np.ndarray, list[Box]]]:
    """`count` 960x540 generated scenes as `python -m train.gen --scenes` makes them (difficulty 1, up
    to 3 plates 70-260 px wide), from their own seed and their own background sampler."""
    from train.fonts import available_fonts
    from train.gen import make_backgrounds, sample_scene

    rng = np.random.default_rng([seed, 5])
    backgrounds = make_backgrounds(folders, True, np.random.default_rng([seed, 6]))
    fonts = available_fonts()
    out = []
    for _ in range(count):
        image, plates = sample_scene(rng, backgrounds, fonts, difficulty=1.0)
        out.append((cv2.cvtColor(image, cv2.COLOR_BGR2GRAY),
                    [(float(x), float(y), float(x + w), float(y + h)) for (x, y, w, h), _ in plates]))
    return out


def measure(prefilter: HogPrefilter, frames: list[Frame], scenes: list[tuple[np.ndarray, list[Box]]]
            ) -> dict[str, dict[str, float | int]]:
    """Held-out proposal figures: generated scenes (all plates) and held-out frames (plates >= 60 px)."""
    generated, streets = Measure(), Measure()
    for gray, plates in scenes:
        generated.add(prefilter, gray, plates, plates)
    for frame in frames:
        if frame.held_out:
            wide = [p for p in frame.plates if p[2] - p[0] >= MIN_MEASURED_WIDTH]
            streets.add(prefilter, frame.gray(), frame.plates, wide)
    out = {"generated_scenes": generated.summary()}
    if streets.images:
        out["held_out_frames"] = streets.summary()
    return out


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def _write(out: Path, hog: cv2.HOGDescriptor, meta: dict[str, object]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    hog.save(str(out / "hog.yml"))
    (out / "hog.json").write_text(json.dumps(meta, indent=2) + "\n")


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


def _steps(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cascade.train_hog", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="model folder to write (hog.yml, hog.json)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--positives", type=int, default=4000, help="generated plates")
    parser.add_argument("--negatives", type=int, default=8000, help="random background crops")
    parser.add_argument("--backgrounds", type=Path, action="append", default=[],
                        help="folder of photos, with an optional boxes.tsv of plates (repeatable); the "
                             "photos bundled with scikit-image are always added")
    parser.add_argument("--holdout-prefix", default="valid_",
                        help="frames named so are only measured, never trained on ('' for none)")
    parser.add_argument("--window", type=_size, default=(64, 24), help="HOG window WxH (multiples of 8)")
    parser.add_argument("--scale-step", type=float, default=1.3, help="HOG pyramid step of the model")
    parser.add_argument("--measure-steps", type=_steps, default=[1.2, 1.3, 1.414],
                        help="also measure held-out recall at these steps (comma-separated)")
    parser.add_argument("--rounds", type=int, default=2, help="hard-negative mining rounds")
    parser.add_argument("--hard-per-image", type=int, default=8)
    parser.add_argument("--mining-scenes", type=int, default=100, help="generated 960x540 scenes mined too")
    parser.add_argument("--lam", type=float, default=1e-3, help="L2 regularisation of the SVM")
    parser.add_argument("--target-recall", type=float, default=0.95,
                        help="calibration: share of plates covered at threshold 0, in each calibration set")
    parser.add_argument("--calibration-scenes", type=int, default=60)
    parser.add_argument("--eval-scenes", type=int, default=40)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    from train.fonts import available_fonts
    from train.gen import builtin_background_dirs, make_backgrounds

    try:
        frames = load_frames([*args.backgrounds, *builtin_background_dirs()], args.holdout_prefix)
        fonts = available_fonts()
        backgrounds = make_backgrounds(args.backgrounds, True, np.random.default_rng([args.seed, 0]))
        params = HogParams(window=args.window)
        hog = params.build()
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"cascade.train_hog: {exc}", file=sys.stderr)
        return 2
    window = params.window
    training = [f for f in frames if not f.held_out]

    positives, generated, real = positive_windows(np.random.default_rng([args.seed, 1]), args.positives,
                                                  frames, window, backgrounds, fonts)
    negatives = negative_windows(np.random.default_rng([args.seed, 2]), args.negatives, frames, window)
    mining_scenes = list(synthetic_scenes(np.random.default_rng([args.seed, 3]), args.mining_scenes,
                                          (960, 540), (60, 260), 3, False, backgrounds, fonts))
    print(f"positives: {generated} generated + {real} real crops; negatives: {len(negatives)}", flush=True)
    x_pos, x_neg = describe(hog, positives), describe(hog, negatives)
    meta: dict[str, object] = {"format": HOG_FORMAT, "hog": params.to_json(), "scale_step": args.scale_step,
                               "pad": DEFAULT_PAD, "plate_fill": [1 / 3, 1.0]}  # the final fill comes later
    hard_counts = []
    for round_ in range(args.rounds + 1):
        x = np.concatenate([x_pos, x_neg])
        y = np.concatenate([np.ones(len(x_pos)), -np.ones(len(x_neg))])
        w, b = train_linear_svm(x, y, args.lam)
        accuracy = float(((x @ w + b > 0) == (y > 0)).mean())
        print(f"round {round_}: {len(x_pos)} positives, {len(x_neg)} negatives, training accuracy "
              f"{accuracy:.4f}", flush=True)
        if round_ == args.rounds:
            break
        _write(args.out, _detector(hog, w, b), meta)
        images = [*((f.gray(), f.plates) for f in training), *mining_scenes]
        hard = mine_hard_negatives(HogPrefilter(args.out), images, args.hard_per_image)
        hard_counts.append(len(hard))
        print(f"  mined {len(hard)} hard negatives", flush=True)
        if hard:
            x_neg = np.concatenate([x_neg, describe(hog, hard)])

    # calibration: the margin at which target_recall of the plates of each set keep a covering hit
    _write(args.out, _detector(hog, w, b), meta)
    prefilter = HogPrefilter(args.out)
    floor = -1.0
    street_covers = [c for f in training for c in best_covers(
        prefilter, f.gray(), [p for p in f.plates if p[2] - p[0] >= MIN_MEASURED_WIDTH], floor)]
    scene_covers = [c for gray, plates in synthetic_scenes(
        np.random.default_rng([args.seed, 4]), args.calibration_scenes, (960, 540), (60, 260), 3, False,
        backgrounds, fonts) for c in best_covers(prefilter, gray, plates, floor)]
    sets = {name: covers for name, covers in (("frames", street_covers), ("scenes", scene_covers)) if covers}
    margins = {name: float(np.quantile([c[0] for c in covers], 1 - args.target_recall))
               for name, covers in sets.items()}
    operating = max(floor, min(margins.values()))
    fills = [c[1] for covers in sets.values() for c in covers if c[0] >= operating]
    plate_fill = [round(float(np.quantile(fills, 0.02)), 3), round(float(np.quantile(fills, 0.98)), 3)]
    b -= operating
    print(f"calibration: margins {margins} -> {operating:.3f} is threshold 0; plate fill {plate_fill}",
          flush=True)
    meta["plate_fill"] = plate_fill
    meta["calibration"] = {"target_recall": args.target_recall,
                           "margin_folded_into_bias": round(operating, 4),
                           **{f"{name}_plates": len(covers) for name, covers in sets.items()},
                           **{f"{name}_margin": round(m, 4) for name, m in margins.items()}}
    meta["training"] = {
        "command": "python -m cascade.train_hog " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed, "positives_generated": generated, "positives_real": real,
        "negatives_random": len(negatives), "negatives_hard": hard_counts, "lam": args.lam,
        "training_accuracy": round(accuracy, 4), "frames_training": len(training),
        "frames_held_out": sum(f.held_out for f in frames), "opencv": cv2.__version__}
    _write(args.out, _detector(hog, w, b), meta)

    prefilter = HogPrefilter(args.out)
    scenes = eval_scenes(args.seed + 1_000_003, args.eval_scenes, args.backgrounds)
    measured = {}
    for step in sorted({args.scale_step, *args.measure_steps}):
        prefilter.scale_step = step
        measured[f"step_{step:g}"] = measure(prefilter, frames, scenes)
        print(f"step {step:g}: {json.dumps(measured[f'step_{step:g}'])}", flush=True)
    meta["measured"] = {"threshold": 0.0, "pad": DEFAULT_PAD, "eval_scenes_seed": args.seed + 1_000_003,
                        "model_step": measured[f"step_{args.scale_step:g}"], "by_step": measured}
    meta["training"]["minutes"] = round((time.perf_counter() - started) / 60, 1)  # type: ignore[index]
    _write(args.out, prefilter.hog, meta)
    print(f"wrote {args.out / 'hog.yml'} and {args.out / 'hog.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
