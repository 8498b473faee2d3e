"""Fine-tune the plate reader on a user's own labelled photos: `anprd finetune DIR --out MODEL_DIR`.

    anprd finetune photos/ --out models/my-plates            # 20% of the photos held out, seed 1
    anprd finetune photos/ --out models/my-plates --holdout 0.5 --split-by-name   # first half trains
    anprd eval more-photos/ --model models/my-plates

DIR holds photos and `labels.tsv` in the `anprd eval` format (file, x, y, w, h, PLATE per plate).
1. The photos are split by file (never a photo's plates on both sides): file names sorted, then a
   shuffle seeded by `--seed` holds out `--holdout` of them (`--split-by-name`: the last ones by name).
   The held-out part is never trained on; it gives the figures before and after.
2. The base model (`--model`, default the config's `detector.model`) scores the held-out part, and
   finds the plates of the training part: the reader is taught on the boxes the detector really
   gives (and on the labelled boxes, for plates it misses or boxes differently).
3. Each step's batch is half crops of the user's plates and half synthetic plates (`train.gen`,
   so the reader does not forget other plates). A user's crop is cut around the plate with context,
   posed anew (rotation, perspective, a smaller plate), degraded (blur, noise, light, JPEG) and cut
   by `anprd.detector.reader_crop` around a box with the detector's errors, as the detector cuts it.
   Synthetic crops learn from CTC and per-column targets, the user's (whose characters' places are
   unknown) from CTC alone.
4. MODEL_DIR is the base model folder with the fine-tuned reader in place of the base readers;
   its model.json says what made it under "finetune" (base model and its model.json's hash, the
   command, seed, steps, data folder, hash of the training files' names, the split, the held-out
   figures before and after, minutes). `finetune-split.json` lists the files of each part. The
   base model's confidence calibration is dropped (it was fitted to the base reader).

Only the reader is fine-tuned: the detection network, and so which plates are found, stays the
base model's.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anprd.errors import AnprdError
from anprd.evaluate import EvalReport, LabelledImage, read_labels

__all__ = ["MIN_PLATES", "FinetuneError", "RealPlate", "Split", "augment_plate", "cut_plate", "main",
           "names_hash", "split_images"]

MIN_PLATES = 20  # fewer plates in the training part teach a reader nothing it keeps
MAX_LABEL = 10  # the reader reads 1-10 characters (train.train.MAX_LABEL)
EVAL_KEYS = ("images", "plates", "detected", "read_exact", "read_rate", "detection_recall", "char_accuracy",
             "false_positives", "ms_per_image")
SYNTHETIC_CHECK = (1000, 990011)  # synthetic crops (count, seed) read before and after: forgetting
STREETS = Path(__file__).resolve().parents[2] / "shared" / "data" / "streets"
READER_NAME = "reader-{base}-ft.weights.h5"


class FinetuneError(AnprdError):
    """A folder or option fine-tuning cannot use; the one-line message says why."""


# --------------------------------------------------------------------------------------------------
# The split: by file, reproducible
# --------------------------------------------------------------------------------------------------
@dataclass
class Split:
    train: list[LabelledImage]
    heldout: list[LabelledImage]
    method: str  # "seeded shuffle" or "by name"


def split_images(images: list[LabelledImage], holdout: float, seed: int, by_name: bool = False) -> Split:
    """Split labelled photos by file into a training and a held-out part, both in file-name order.

    The files are sorted by name first, so the split depends only on the names, `holdout` and `seed`
    (not on the order of labels.tsv). round(len * holdout) files are held out, at least one when
    `holdout` > 0 and there are two files or more: with `by_name` the last ones by name, else those
    a shuffle seeded by `seed` puts first."""
    ordered = sorted(images, key=lambda item: item.path.name)
    held = round(len(ordered) * holdout)
    if holdout > 0 and len(ordered) > 1:
        held = min(max(held, 1), len(ordered) - 1)
    if by_name:
        return Split(ordered[: len(ordered) - held], ordered[len(ordered) - held:], "by name")
    order = np.random.default_rng(seed).permutation(len(ordered))
    out = set(order[:held].tolist())
    return Split([item for i, item in enumerate(ordered) if i not in out],
                 [item for i, item in enumerate(ordered) if i in out], "seeded shuffle")


def names_hash(images: list[LabelledImage]) -> str:
    """sha256 of the sorted file names, one per line: which photos a model was fine-tuned on."""
    return hashlib.sha256("\n".join(sorted(item.path.name for item in images)).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# The user's plates as reader crops
# --------------------------------------------------------------------------------------------------
@dataclass
class RealPlate:
    """A labelled plate cut from its photo with room around it (grayscale), its labelled box and the
    base detector's box (None where it missed the plate), (x0, y0, x1, y1) in the patch."""

    patch: np.ndarray
    label_box: tuple[float, float, float, float]
    detected_box: tuple[float, float, float, float] | None
    text: str


PATCH_MAX_PLATE_W = 256  # larger plates are shrunk: the reader sees 128 px, and poses shrink further


def cut_plate(gray: np.ndarray, label_box: tuple[float, float, float, float],
              detected_box: tuple[float, float, float, float] | None, text: str) -> RealPlate:
    """The plate with context around both boxes (half a plate width each side, 1.5 heights above and
    below), the image's border repeated outside it, shrunk when the plate is wider than 256 px."""
    import cv2

    boxes = [label_box] + ([detected_box] if detected_box is not None else [])
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    pw, ph = max(4.0, x1 - x0), max(2.0, y1 - y0)
    left, right = math.floor(x0 - 0.5 * pw), math.ceil(x1 + 0.5 * pw)
    top, bottom = math.floor(y0 - max(1.5 * ph, 0.2 * pw)), math.ceil(y1 + max(1.5 * ph, 0.2 * pw))
    # a translation with the border repeated: also right for a plate at or over the image's edge
    shift = np.array([[1, 0, -left], [0, 1, -top]], np.float32)
    patch = cv2.warpAffine(gray, shift, (right - left, bottom - top), flags=cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_REPLICATE)
    scale = min(1.0, PATCH_MAX_PLATE_W / (label_box[2] - label_box[0]))

    def moved(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        return ((box[0] - left) * scale, (box[1] - top) * scale, (box[2] - left) * scale,
                (box[3] - top) * scale)

    if scale < 1:
        size = (max(1, round(patch.shape[1] * scale)), max(1, round(patch.shape[0] * scale)))
        patch = cv2.resize(patch, size, interpolation=cv2.INTER_AREA)
    return RealPlate(np.ascontiguousarray(patch), moved(label_box),
                     None if detected_box is None else moved(detected_box), text)


def augment_plate(rng: np.random.Generator, plate: RealPlate, strength: float = 1.0,
                  use_detected: float = 0.6):
    """A 32x128 reader crop of a user's plate, as the detector would cut it from another photo of it:
    the detector's box (with probability `use_detected` where it found the plate) or the labelled one,
    the plate turned a few degrees, put in perspective and shown smaller now and then, with light,
    blur, noise and JPEG of other cameras, cut by `reader_crop` around a box off by the detector's
    errors and the `read_scales`. Returns a `train.gen.ReadSample` without character places."""
    import cv2

    from anprd.detector import reader_crop
    from train.gen import ReadSample

    box = plate.detected_box if plate.detected_box is not None and rng.random() < use_detected \
        else plate.label_box
    x0, y0, x1, y1 = box
    pw, ph = max(4.0, x1 - x0), max(2.0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    # pose: rotation and perspective about the plate's centre, and a smaller plate now and then
    angle = math.radians(float(np.clip(rng.normal(0, 3.0 * strength), -8, 8)))
    shrink = 1.0
    if rng.random() < 0.4 * strength and pw > 40:
        shrink = math.exp(rng.uniform(math.log(max(36 / pw, 0.4)), 0))
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = (corners - [cx, cy]) @ rotation.T + [cx, cy]
    moved += rng.normal(0, 1, (4, 2)) * [0.03 * pw * strength, 0.06 * ph * strength]
    moved *= shrink
    matrix = cv2.getPerspectiveTransform(corners, moved.astype(np.float32))
    size = (max(8, round(plate.patch.shape[1] * shrink)), max(8, round(plate.patch.shape[0] * shrink)))
    image = cv2.warpPerspective(plate.patch, matrix, size, flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    # light: contrast, brightness, gamma
    mean = float(image.mean())
    image = (image - mean) * math.exp(rng.normal(0, 0.25 * strength)) + mean + rng.normal(0, 18 * strength)
    image = 255 * (np.clip(image, 0, 255) / 255) ** math.exp(rng.normal(0, 0.25 * strength))
    # camera: blur (defocus or motion), noise, JPEG
    bx0, by0 = moved.min(axis=0)
    bx1, by1 = moved.max(axis=0)
    plate_w = max(4.0, float(bx1 - bx0))
    if rng.random() < 0.45 * strength:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 0.5 + 0.012 * plate_w))
    elif rng.random() < 0.15 * strength:
        length = int(rng.integers(2, max(3, int(0.05 * plate_w) + 1)))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2] = 1.0 / length
        centre = (length / 2 - 0.5, length / 2 - 0.5)
        kernel = cv2.warpAffine(kernel, cv2.getRotationMatrix2D(centre, rng.uniform(-30, 30), 1.0),
                                (length, length))
        image = cv2.filter2D(image, -1, kernel / max(kernel.sum(), 1e-6))
    if rng.random() < 0.5 * strength:
        image = image + rng.normal(0, rng.uniform(2, 10), image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    if rng.random() < 0.5 * strength:
        _, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 90))])
        image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    # the box as the detector gives it: edges off by a few percent, scaled as read_scales do
    pw, ph = float(bx1 - bx0), float(by1 - by0)
    factor = rng.uniform(0.88, 1.12)
    cx, cy = (bx0 + bx1) / 2 + rng.normal(0, 0.02) * pw, (by0 + by1) / 2 + rng.normal(0, 0.05) * ph
    half_w = pw / 2 * factor * math.exp(rng.normal(0, 0.03))
    half_h = ph / 2 * factor * math.exp(rng.normal(0, 0.06))
    crop, _ = reader_crop(image, (cx - half_w, cy - half_h, cx + half_w, cy + half_h))
    return ReadSample(crop, plate.text, ())


def plain_crop(plate: RealPlate):
    """The plate's crop on its labelled box, unaugmented (a quick reading check)."""
    from anprd.detector import reader_crop
    from train.gen import ReadSample

    return ReadSample(reader_crop(plate.patch, plate.label_box)[0], plate.text, ())


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------
def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Fine-tune the plate reader on your own labelled photos (DIR/labels.tsv, "
                               "the `anprd eval` format) and write a model folder with it.")
    parser.add_argument("folder", metavar="DIR", help="photos and labels.tsv (file x y w h PLATE per plate)")
    parser.add_argument("--out", required=True, metavar="MODEL_DIR",
                        help="the new model folder (must not exist, or be empty)")
    parser.add_argument("--model", help="base model folder (default: the config's detector.model)")
    parser.add_argument("--config", help="config.yaml whose detector section scores the held-out photos")
    parser.add_argument("--steps", type=int, default=1500, help="training steps (default 1500)")
    parser.add_argument("--holdout", type=float, default=0.2,
                        help="fraction of the photos held out for the before/after figures (default 0.2)")
    parser.add_argument("--split-by-name", action="store_true",
                        help="hold out the last photos by file name instead of a seeded shuffle")
    parser.add_argument("--seed", type=int, default=1, help="split and training seed (default 1)")
    parser.add_argument("--batch-size", type=int, default=64, help="crops per step (default 64)")
    parser.add_argument("--real-fraction", type=float, default=0.5,
                        help="share of each batch cut from your photos; the rest are synthetic (default 0.5)")
    parser.add_argument("--real-weight", type=float, default=0.5,
                        help="weight of your crops' CTC loss beside the synthetic crops' loss (default 0.5)")
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default 5e-4)")
    parser.add_argument("--freeze-norm", action=argparse.BooleanOptionalAction, default=False,
                        help="keep the base reader's batch-norm statistics and scales (default: off)")
    parser.add_argument("--anchor", type=float, default=0.0,
                        help="weight of a pull of every weight back to the base reader's, summed squared "
                             "distance (L2-SP; default 0)")
    parser.add_argument("--backgrounds", type=Path, action="append", default=None,
                        help="background folders for the synthetic plates (default ../shared/data/streets "
                             "when present; scikit-image's photos always)")
    parser.add_argument("--styled", type=float, default=0.6,
                        help="share of synthetic plates drawn in national styles (default 0.6)")
    parser.add_argument("--workers", type=int, default=1, help="synthetic plate generator processes")
    parser.add_argument("--check-count", type=int, default=SYNTHETIC_CHECK[0],
                        help="synthetic crops read before and after, to see what the reader forgot "
                             f"(default {SYNTHETIC_CHECK[0]})")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    return parser


def _check_options(args: argparse.Namespace) -> None:
    if not 0 <= args.holdout < 1 or not math.isfinite(args.holdout):
        raise FinetuneError(f"--holdout must be at least 0 and under 1, got {args.holdout:g}")
    if args.steps < 1:
        raise FinetuneError(f"--steps must be at least 1, got {args.steps}")
    if args.batch_size < 2:
        raise FinetuneError(f"--batch-size must be at least 2, got {args.batch_size}")
    if not 0 < args.real_fraction <= 1:
        raise FinetuneError(f"--real-fraction must be over 0 and at most 1, got {args.real_fraction:g}")
    if not args.real_weight > 0 or not args.lr > 0:
        raise FinetuneError("--real-weight and --lr must be positive")
    if args.workers < 1 or args.check_count < 1:
        raise FinetuneError("--workers and --check-count must be at least 1")


def _check_out(out: Path, model_dir: Path | None = None) -> None:
    if out.exists() and not out.is_dir():
        raise FinetuneError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise FinetuneError(f"{out}: exists and is not empty; choose a new folder for the fine-tuned model")
    if model_dir is not None and out.resolve() == model_dir.resolve():
        raise FinetuneError(f"{out}: is the base model's folder")


def _detector_config(args: argparse.Namespace):
    """The detector settings and config folder, as the CLI's `--config`/`--model` give them."""
    from anprd.config.detector import DetectorConfig

    base_dir = None
    if args.config:
        from anprd.config import load_config

        config = load_config(args.config).detector
        base_dir = Path(args.config).resolve().parent
    else:
        config = DetectorConfig()
    if args.model:
        config = config.model_copy(update={"model": str(Path(args.model).resolve())})
    return config, base_dir


def _figures(report: EvalReport) -> dict:
    figures = report.as_json()
    return {key: figures[key] for key in EVAL_KEYS}


def _bar(desc: str, total: int, quiet: bool = False):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False, disable=quiet or None)


def _score(detector, images: list[LabelledImage], desc: str, keep: list | None = None) -> EvalReport:
    """`evaluate_images` with a progress bar; `keep` collects each image's detections."""
    from anprd.evaluate import evaluate_images

    bar = _bar(desc, len(images))

    def detect(image: np.ndarray):
        found = detector.detect(image)
        if keep is not None:
            keep.append(found)
        return found

    try:
        return evaluate_images(images, detect, lambda done, _total: bar.update(done - bar.n))
    finally:
        bar.close()


def _real_plates(images: list[LabelledImage], detections: list[list]) -> tuple[list[RealPlate], int]:
    """Every labelled plate of `images` cut with context, with the detection matched to it (IoU >= 0.3,
    Hungarian, as `anprd eval` matches); and how many were found."""
    import cv2
    from scipy.optimize import linear_sum_assignment

    from anprd.evaluate import IOU_MATCH
    from anprd.imageio import read_image

    plates, found = [], 0
    for item, predicted in zip(images, detections, strict=True):
        if not item.plates:
            continue
        gray = cv2.cvtColor(read_image(item.path), cv2.COLOR_BGR2GRAY)
        matched: dict[int, int] = {}
        if predicted:
            iou = np.array([[box.iou(p.box) for p in predicted] for box, _ in item.plates])
            rows, cols = linear_sum_assignment(-iou)
            matched = {int(r): int(c) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= IOU_MATCH}
        for i, (box, text) in enumerate(item.plates):
            detected = None
            if i in matched:
                d = predicted[matched[i]].box
                detected = (d.x, d.y, d.x + d.w, d.y + d.h)
                found += 1
            plates.append(cut_plate(gray, (box.x, box.y, box.x + box.w, box.y + box.h), detected, text))
    return plates, found


def _reader_accuracy(predict, batch: dict[str, np.ndarray]) -> dict[str, float]:
    from train.train_reader import evaluate

    return {key: round(value, 4) for key, value in evaluate(predict, batch).items()}


def _default_backgrounds() -> list[Path]:
    for candidate in (Path("../shared/data/streets"), STREETS):
        if candidate.is_dir():
            return [candidate]
    return []


def _print_figures(before: dict | None, after: dict | None, heldout: int, plates: int) -> None:
    if before is None or after is None:
        print("no held-out photos (--holdout 0): no before/after figures")
        return
    print(f"held-out part ({heldout} photos, {plates} plates, never trained on):")
    print(f"  {'':<18}{'before':>10}{'after':>10}")
    for key in EVAL_KEYS:
        print(f"  {key:<18}{before[key]:>10}{after[key]:>10}")
    change = 100 * (after["read_rate"] - before["read_rate"])
    print(f"  read rate {100 * before['read_rate']:.1f}% -> {100 * after['read_rate']:.1f}% "
          f"({change:+.1f} points)")


def finetune(args: argparse.Namespace, command: str,
             load_tensorflow: Callable[[], None] | None = None) -> dict:
    """Do what the module docstring says; returns the "finetune" record written to model.json."""
    started = time.time()
    _check_options(args)
    folder, out = Path(args.folder), Path(args.out)
    images = read_labels(folder)  # EvalError: one line naming the file (and line)
    for item in images:
        for _, text in item.plates:
            if len(text) > MAX_LABEL:
                raise FinetuneError(f"{item.path}: plate {text} has {len(text)} characters; the reader "
                                    f"reads at most {MAX_LABEL}")
    split = split_images(images, args.holdout, args.seed, args.split_by_name)
    train_plates = sum(len(item.plates) for item in split.train)
    if train_plates < MIN_PLATES:
        raise FinetuneError(
            f"{folder}: needs at least {MIN_PLATES} labelled plates to learn from, found {train_plates} "
            f"in the training part ({len(split.train)} of {len(images)} photos; --holdout {args.holdout:g} "
            f"keeps {len(split.heldout)} for the before/after figures)")
    _check_out(out)
    config, base_dir = _detector_config(args)
    from anprd.detector import ModelError, PlateDetector, resolve_model_dir

    model_dir = resolve_model_dir(config.model, base_dir)
    _check_out(out, model_dir)
    base_meta_bytes = (model_dir / "model.json").read_bytes()
    base_meta = json.loads(base_meta_bytes)
    base_readers = base_meta.get("readers") or []
    if not isinstance(base_readers, list) or not base_readers:
        raise ModelError(f"{model_dir / 'model.json'}: the base model has no plate reader to fine-tune")

    if load_tensorflow is not None:
        load_tensorflow()
    import tensorflow as tf

    from anprd.model import ReaderConfig, build_reader
    from train.train import BatchSource
    from train.train_reader import make_reader_batch, validation_set

    heldout_plates = sum(len(item.plates) for item in split.heldout)
    print(f"{folder}: {len(images)} photos; training on {len(split.train)} ({train_plates} plates), "
          f"holding out {len(split.heldout)} ({heldout_plates} plates), {split.method}"
          + ("" if args.split_by_name else f" (seed {args.seed})"), file=sys.stderr)
    base = PlateDetector(model_dir, config, base_dir)
    before = _figures(_score(base, split.heldout, "held-out photos, base model")) if split.heldout else None
    detections: list[list] = []
    train_before = _figures(_score(base, split.train, "training photos, base model", detections))
    plates, found = _real_plates(split.train, detections)
    del base

    tf.keras.utils.set_random_seed(args.seed)
    reader_record = base_readers[0]
    net = ReaderConfig.from_json(reader_record["net"])
    model = build_reader(net)
    model.load_weights(model_dir / reader_record["weights"])
    backgrounds = [str(b) for b in (_default_backgrounds() if args.backgrounds is None else args.backgrounds)]

    @tf.function(reduce_retracing=True)
    def predict(image):
        return model(image, training=False)["text"]

    synthetic = validation_set(args.check_count, SYNTHETIC_CHECK[1], backgrounds, args.styled)
    synthetic_before = _reader_accuracy(predict, synthetic)

    n_real = max(1, round(args.batch_size * args.real_fraction))
    n_synthetic = args.batch_size - n_real
    if args.freeze_norm:  # Keras runs a frozen BatchNormalization in inference mode: its statistics stay
        for layer in model.layers:
            if isinstance(layer, tf.keras.layers.BatchNormalization):
                layer.trainable = False
    optimizer, train_step = _training(model, args.steps, args.lr, args.real_weight, args.anchor)
    source = BatchSource(args.workers, args.seed * 1000 + 7, backgrounds, n_synthetic, task="reader",
                         styled=args.styled) if n_synthetic else None
    if source is not None:
        source.difficulty.value = 1.0
    rng = np.random.default_rng([args.seed, 20261207])
    bar = _bar("fine-tuning", args.steps)
    losses: list[tuple[float, float]] = []
    train_started = time.time()
    try:
        for step in range(1, args.steps + 1):
            real = make_reader_batch([augment_plate(rng, plates[i])
                                      for i in rng.integers(len(plates), size=n_real)])
            batch = real if source is None else {key: np.concatenate((value, real[key]))
                                                 for key, value in _synthetic_batch(source).items()}
            is_real = np.zeros(len(batch["image"]), np.float32)
            is_real[-n_real:] = 1.0
            synthetic_loss, real_loss = train_step(batch["image"], batch["labels"], batch["label_len"],
                                                   batch["columns"], batch["columns_ok"], is_real)
            losses.append((float(synthetic_loss), float(real_loss)))
            bar.update(1)
            if step % 25 == 0 or step == args.steps:
                mean = np.mean(losses[-25:], axis=0)
                bar.set_postfix(synthetic=f"{mean[0]:.3f}", yours=f"{mean[1]:.3f}")
    finally:
        bar.close()
        if source is not None:
            source.close()
    train_minutes = (time.time() - train_started) / 60
    synthetic_after = _reader_accuracy(predict, synthetic)

    # the model folder: the base's files, the fine-tuned reader in place of the base readers
    out.mkdir(parents=True, exist_ok=True)
    replaced = {r.get("weights") for r in base_readers}
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and path.name not in replaced:
            shutil.copyfile(path, out / path.name)
    weights_name = READER_NAME.format(base=Path(str(reader_record["weights"])).name
                                      .removeprefix("reader-").removesuffix(".weights.h5"))
    model.save_weights(out / weights_name)
    split_record = {"method": split.method, "holdout": args.holdout,
                    **({} if args.split_by_name else {"seed": args.seed}),
                    "train_images": len(split.train), "train_plates": train_plates,
                    "train_plates_found_by_base": found,
                    "heldout_images": len(split.heldout), "heldout_plates": heldout_plates}
    record = {
        "base_model": str(model_dir),
        "base_model_json_sha256": hashlib.sha256(base_meta_bytes).hexdigest(),
        "base_reader": reader_record["weights"],
        "command": command,
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "real_fraction": args.real_fraction,
        "real_weight": args.real_weight,
        "lr": args.lr,
        "freeze_norm": args.freeze_norm,
        "anchor": args.anchor,
        "styled": args.styled,
        "backgrounds": backgrounds,
        "data": str(folder.resolve()),
        "train_files_sha256": names_hash(split.train),
        "heldout_files_sha256": names_hash(split.heldout),
        "split": split_record,
        "heldout_before": before,
        "heldout_after": None,
        "train_part_before": train_before,
        "synthetic_reader_check": {"count": args.check_count, "seed": SYNTHETIC_CHECK[1],
                                   "styled": args.styled, "before": synthetic_before,
                                   "after": synthetic_after},
        "training_minutes": round(train_minutes, 1),
        "minutes": None,
    }
    meta = {key: value for key, value in base_meta.items() if key != "calibration"}
    if "calibration" in base_meta:
        meta["calibration_dropped"] = ("the base model's confidence calibration was fitted to its own "
                                       "reader; confidences are the fine-tuned reader's own")
    reader = {key: value for key, value in reader_record.items()
              if key not in ("validation", "validation_set", "backgrounds", "balance_backgrounds", "styled")}
    reader.update({"weights": weights_name, "command": command, "seed": args.seed, "steps": args.steps,
                   "steps_trained": args.steps, "batch_size": args.batch_size,
                   "minutes": round(train_minutes, 1),
                   "stages": [*reader_record.get("stages", []),
                              {"command": command, "seed": args.seed, "steps": args.steps,
                               "minutes": round(train_minutes, 1)}],
                   "finetuned_from": reader_record["weights"]})
    meta["readers"] = [reader]
    meta["finetune"] = record
    (out / "finetune-split.json").write_text(json.dumps(
        {"data": str(folder.resolve()), **split_record, "train": [i.path.name for i in split.train],
         "heldout": [i.path.name for i in split.heldout]}, indent=1) + "\n")
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n")

    if split.heldout:
        tuned = PlateDetector(out, config.model_copy(update={"model": str(out.resolve())}), base_dir)
        record["heldout_after"] = _figures(_score(tuned, split.heldout, "held-out photos, fine-tuned"))
    record["minutes"] = round((time.time() - started) / 60, 1)
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return record


def _synthetic_batch(source) -> dict[str, np.ndarray]:
    """`source.next()`, without waiting forever for generator processes that died (BatchSource
    blocks until its ring holds a few batches)."""
    import queue

    while len(source.ring) < 4:
        try:
            batch = source.queue.get(timeout=2)
        except queue.Empty:
            if not any(p.is_alive() for p in source.procs):
                raise FinetuneError("the synthetic plate generator stopped (its error is above)") from None
            continue
        source.fresh += 1
        source.ring.append(batch)
        return batch
    return source.next()


def _training(model, total_steps: int, lr: float, real_weight: float, anchor: float = 0.0):
    """Adam with a short warm-up and cosine decay; the loss is train.train_reader's (per-column
    cross-entropy + 0.1 x CTC) over the synthetic crops plus `real_weight` x CTC over the user's,
    plus `anchor` x the squared distance of the trainable weights from where they started (L2-SP)."""
    import keras
    import tensorflow as tf

    from anprd.ctc import BLANK

    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=total_steps, alpha=0.03, warmup_target=lr,
        warmup_steps=max(1, min(150, total_steps // 10)))
    optimizer = keras.optimizers.Adam(schedule, clipnorm=5.0)
    start = [tf.constant(v.numpy()) for v in model.trainable_variables]

    @tf.function(reduce_retracing=True)
    def train_step(image, labels, label_len, columns, columns_ok, is_real):
        with tf.GradientTape() as tape:
            logits = model(tf.cast(image, tf.float32), training=True)["text"]
            ctc = tf.nn.ctc_loss(labels=labels, logits=logits, label_length=label_len,
                                 logit_length=tf.fill([tf.shape(image)[0]], logits.shape[1]),
                                 logits_time_major=False, blank_index=BLANK)
            per_column = tf.nn.sparse_softmax_cross_entropy_with_logits(columns, logits)
            column_ce = tf.reduce_mean(per_column, axis=1)
            synthetic = 1.0 - is_real
            synthetic_loss = (
                tf.reduce_sum(synthetic * 0.1 * ctc) / tf.maximum(tf.reduce_sum(synthetic), 1.0)
                + tf.reduce_sum(column_ce * columns_ok) / tf.maximum(tf.reduce_sum(columns_ok), 1.0))
            real_loss = tf.reduce_sum(is_real * ctc) / tf.maximum(tf.reduce_sum(is_real), 1.0)
            loss = synthetic_loss + real_weight * real_loss
            if anchor:
                loss += anchor * tf.add_n([tf.reduce_sum(tf.square(v - v0))
                                           for v, v0 in zip(model.trainable_variables, start, strict=True)])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return synthetic_loss, real_loss

    return optimizer, train_step


def main(argv: list[str] | None = None, prog: str = "python -m train.finetune",
         load_tensorflow: Callable[[], None] | None = None) -> int:
    """Parse, fine-tune, print the held-out figures. Errors the user can fix raise AnprdError (the
    CLI prints them as one line, exit status 2)."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(prog).parse_args(argv)
    command = "anprd finetune " + shlex.join(argv)
    record = finetune(args, command, load_tensorflow)
    before, after = record["heldout_before"], record["heldout_after"]
    if args.json:
        print(json.dumps({"model": str(args.out), "before": before, "after": after,
                          "split": record["split"], "minutes": record["minutes"]}))
    else:
        _print_figures(before, after, record["split"]["heldout_images"], record["split"]["heldout_plates"])
        synthetic = record["synthetic_reader_check"]
        print(f"synthetic plates read by the reader alone: {100 * synthetic['before']['read_acc']:.1f}% -> "
              f"{100 * synthetic['after']['read_acc']:.1f}% ({synthetic['count']} crops)")
        print(f"wrote {args.out} in {record['minutes']} min; use it with --model {args.out} "
              f"or detector.model: {args.out}")
    return 0


def _command_line() -> int:
    try:
        return main()
    except KeyboardInterrupt:
        return 130
    except (AnprdError, FileNotFoundError, PermissionError) as exc:
        print(f"python -m train.finetune: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(_command_line())
