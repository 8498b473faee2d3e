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
   unknown) from CTC alone, in which O/0 and I/1 count as one character each (`--learn-lookalikes`
   lifts that): which of two look-alikes a glyph is, is a country's habit (US plates have no O or
   I), and a reader taught it by one country's plates misreads other countries' O and I.
4. Where the base detector missed some of the training part's plates (or with `--detector`; never
   with `--no-detector`), the detection network's presence and box outputs are fine-tuned too:
   64x128 windows cut from the training photos (`detector_window`) around each labelled plate,
   posed and degraded as the reader's crops are, at scales and places that make them positives by
   the presence rule (`train.gen.presence_label`: the plate inside the window, under 80% of its
   width and 87.5% of its height, over 60% of either; half centred as the detector's re-read crop
   frames a plate) or negatives by it (cut by an edge, too small, too large), and background windows
   anywhere else at the pyramid's scales; missed plates are drawn more often. They learn presence
   and box (no text: their characters' places are unknown), mixed with synthetic windows
   (`train.gen.sample_window`, all of train.train's losses) so other plates are not forgotten.
5. The training labels' formats (`#` a digit, `@` a letter) are counted, and checked leave-one-out
   on the base model's reads of the training plates (`format_check`): with each plate's own format
   taken out of the counts, does the formats' prior (`anprd.formats.FormatPrior`) read as many of
   them right? Unless it reads fewer, MODEL_DIR's model.json carries the counts as `formats`, and
   the detector reads with them (`detector.model_formats`): the look-alikes the fine-tune leaves
   to the synthetic plates (O/0, I/1) are then settled by the user's own plates' formats.
6. MODEL_DIR is the base model folder with the fine-tuned reader in place of the base readers (and
   the fine-tuned detection network in place of the base's, model.json's "weights" naming it);
   its model.json says what made it under "finetune" (base model and its model.json's hash, the
   command, seed, steps, data folder, hash of the training files' names, the split, the held-out
   figures before and after, the detector fine-tune's settings and window checks, minutes).
   `finetune-split.json` lists the files of each part. The base model's confidence calibration is
   dropped (it was fitted to the base reader). The folder's networks are exported to ONNX as
   `make export` does, so it runs without TensorFlow; the held-out "after" figures are the exported
   networks'.
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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anprd.errors import AnprdError
from anprd.evaluate import EvalReport, LabelledImage, read_labels
from anprd.formats import FormatPrior, formats_right, plate_format

__all__ = ["MIN_PLATES", "FinetuneError", "RealPhoto", "RealPlate", "Split", "augment_plate", "cut_plate",
           "detector_window", "format_check", "formats_line", "main", "make_window_batch", "names_hash",
           "plate_formats", "split_images"]

MIN_PLATES = 20  # fewer plates in the training part teach a reader nothing it keeps
MAX_LABEL = 10  # the reader reads 1-10 characters (train.train.MAX_LABEL)
MIN_FORMAT_PLATES = 3  # a format is reported as the user's when this many training plates have it
EVAL_KEYS = ("images", "plates", "detected", "read_exact", "read_rate", "detection_recall", "char_accuracy",
             "false_positives", "ms_per_image")
SYNTHETIC_CHECK = (1000, 990011)  # synthetic crops (count, seed) read before and after: forgetting
STREETS = Path(__file__).resolve().parents[2] / "shared" / "data" / "streets"
READER_NAME = "reader-{base}-ft.weights.h5"
DETECTOR_NAME = "weights-ft.weights.h5"
DETECTOR_CHECK = (1000, 990021)  # synthetic windows (count, seed) scored before and after: forgetting
LOOKALIKES = ("0O", "1I")  # the user's plates do not teach which of these a glyph is (`_training`)


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


def plate_formats(images: list[LabelledImage], min_plates: int = MIN_FORMAT_PLATES) -> dict[str, int]:
    """The formats of the labelled plates (`@` a letter, `#` a digit, as `detector.patterns` writes
    them) that at least `min_plates` plates have, with their counts, commonest first. A reader
    fine-tuned on them still leaves O/0 and I/1 to the synthetic plates; a format settles those."""
    counts = Counter(plate_format(text) for item in images for _, text in item.plates)
    return {form: n for form, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_plates}


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
# The user's photos as detector windows (the presence fine-tune)
# --------------------------------------------------------------------------------------------------
@dataclass
class RealPhoto:
    """A training photo (grayscale) for detector windows: its labelled plate boxes (x0, y0, x1, y1),
    which of them the base detector missed, and the base's detections no label matched (maybe a
    plate nobody labelled: background windows keep away from them)."""

    gray: np.ndarray
    boxes: list[tuple[float, float, float, float]]
    missed: list[bool]
    unmatched: list[tuple[float, float, float, float]]


# the share of each kind of window cut from the user's photos; the labels come from the presence rule
WINDOW_KINDS = {"positive": 0.45, "truncated": 0.15, "too_small": 0.1, "too_big": 0.05, "background": 0.25}
PYRAMID_SCALES = (0.12, 1.6)  # the default pyramid's range: 0.6 * 128 / 640 .. 0.75 * 128 / 60
MISSED_WEIGHT = 3.0  # a plate the base detector missed is drawn this many times as often


def _translate(x: float, y: float) -> np.ndarray:
    return np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], np.float64)


def _cut_window(gray: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The 64x128 window that the 3x3 `matrix` maps `gray` to (photo -> window pixels), shrunk
    with INTER_AREA first where the window sees the photo smaller (as the pyramid's levels are made),
    the photo's border repeated outside it."""
    import cv2

    from anprd.model import WINDOW_H, WINDOW_W

    corners = np.array([[0, 0], [WINDOW_W, 0], [WINDOW_W, WINDOW_H], [0, WINDOW_H]], np.float32)
    seen = cv2.perspectiveTransform(corners[None], np.linalg.inv(matrix).astype(np.float32))[0]
    h, w = gray.shape[:2]
    scale = math.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    margin = 2 + 2 / max(scale, 1e-3)
    x0 = int(np.clip(math.floor(seen[:, 0].min() - margin), 0, w - 1))
    y0 = int(np.clip(math.floor(seen[:, 1].min() - margin), 0, h - 1))
    x1 = int(np.clip(math.ceil(seen[:, 0].max() + margin), x0 + 1, w))
    y1 = int(np.clip(math.ceil(seen[:, 1].max() + margin), y0 + 1, h))
    region = gray[y0:y1, x0:x1]
    matrix = matrix @ _translate(x0, y0)
    if scale < 0.8:
        size = (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale)))
        fx, fy = size[0] / region.shape[1], size[1] / region.shape[0]
        region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
        matrix = matrix @ np.diag([1 / fx, 1 / fy, 1.0])
    return cv2.warpPerspective(region, matrix, (WINDOW_W, WINDOW_H), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)


def _degrade(rng: np.random.Generator, image: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Light (contrast, brightness, gamma) and camera (blur, noise, JPEG) of other cameras."""
    import cv2

    image = image.astype(np.float32)
    mean = float(image.mean())
    image = (image - mean) * math.exp(rng.normal(0, 0.25 * strength)) + mean + rng.normal(0, 18 * strength)
    image = 255 * (np.clip(image, 0, 255) / 255) ** math.exp(rng.normal(0, 0.25 * strength))
    if rng.random() < 0.35 * strength:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.2))
    if rng.random() < 0.5 * strength:
        image = image + rng.normal(0, rng.uniform(2, 8), image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    if rng.random() < 0.5 * strength:
        _, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 90))])
        image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    return image


def detector_window(rng: np.random.Generator, photo: RealPhoto, strength: float = 1.0,
                    kind: str | None = None):
    """A 64x128 window cut from a user's photo, labelled by the presence rule (`train.gen.presence_label`)
    over all the photo's labelled plates: around a plate (drawn `MISSED_WEIGHT` times as often where
    the base detector missed it), turned a few degrees and put in perspective, at a scale and place
    that make it a positive (half of them centred as the detector's re-read crop frames a plate) or
    a negative by the rule (`truncated`, `too_small`, `too_big`, as `train.gen.sample_window` makes
    them), or a `background` window anywhere at a pyramid scale (away from the base's unmatched
    detections). Degraded like the reader's crops. Returns a `train.gen.WindowSample` without text."""
    import cv2

    from anprd.model import WINDOW_H, WINDOW_W
    from train.gen import WindowSample, _scale_range, presence_label, window_offset

    if kind is None:
        kind = str(rng.choice(list(WINDOW_KINDS), p=list(WINDOW_KINDS.values())))
    if not photo.boxes:
        kind = "background"
    h, w = photo.gray.shape[:2]
    if kind == "background":
        for _ in range(10):  # a place clear of the base's unmatched detections, if one turns up
            scale = math.exp(rng.uniform(*np.log(PYRAMID_SCALES)))
            seen_w, seen_h = WINDOW_W / scale, WINDOW_H / scale
            left = rng.uniform(min(0.0, w - seen_w), max(0.0, w - seen_w))
            top = rng.uniform(min(0.0, h - seen_h), max(0.0, h - seen_h))
            if not any(left <= (b[0] + b[2]) / 2 <= left + seen_w and top <= (b[1] + b[3]) / 2 <= top + seen_h
                       for b in photo.unmatched):
                break
        matrix = np.diag([scale, scale, 1.0]) @ _translate(-left, -top)
    else:
        weights = np.where(photo.missed, MISSED_WEIGHT, 1.0)
        x0, y0, x1, y1 = photo.boxes[int(rng.choice(len(photo.boxes), p=weights / weights.sum()))]
        pw, ph = max(4.0, x1 - x0), max(2.0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        angle = math.radians(float(np.clip(rng.normal(0, 2.5 * strength), -7, 7)))
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        moved = (corners - [cx, cy]) @ rotation.T + [cx, cy]
        moved += rng.normal(0, 1, (4, 2)) * [0.025 * pw * strength, 0.05 * ph * strength]
        pose = cv2.getPerspectiveTransform(corners, moved.astype(np.float32)).astype(np.float64)
        bx0, by0 = moved.min(axis=0)
        bw, bh = np.ptp(moved[:, 0]), np.ptp(moved[:, 1])
        s_lo, s_hi = _scale_range(bw, bh)
        centred = kind == "positive" and rng.random() < 0.5
        if centred:  # as the detector's re-read crop frames a plate: ~70% of the width, centred
            scale = max(min(rng.uniform(0.62, 0.78) * WINDOW_W / bw, s_hi), s_lo)
        elif kind in ("positive", "truncated"):
            scale = math.exp(rng.uniform(math.log(s_lo), math.log(s_hi)))
        elif kind == "too_small":
            scale = s_lo * rng.uniform(0.3, 0.92)
        else:
            scale = s_hi * rng.uniform(1.08, 1.8)
        pw, ph = bw * scale, bh * scale
        tx, ty = window_offset(kind, pw, ph, rng, centred)
        matrix = _translate(tx - bx0 * scale, ty - by0 * scale) @ np.diag([scale, scale, 1.0]) @ pose
    image = _degrade(rng, _cut_window(photo.gray, matrix), strength)
    present, box = False, (0.0, 0.0, 0.0, 0.0)
    for x0, y0, x1, y1 in photo.boxes:
        corners = np.array([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]], np.float32)
        seen = cv2.perspectiveTransform(corners, matrix.astype(np.float32))[0]
        seen_box = (float(seen[:, 0].min()), float(seen[:, 1].min()),
                    float(seen[:, 0].max()), float(seen[:, 1].max()))
        if presence_label(seen_box):
            present, box = True, seen_box
            break
    return WindowSample(image, present, "", box, kind if present == (kind == "positive") else
                        ("positive" if present else "truncated"))


def make_window_batch(samples: list) -> dict[str, np.ndarray]:
    """`train.train.make_batch` for the user's windows: presence and box; no text to learn."""
    from anprd.ctc import BLANK
    from train.train import MAX_LABEL as LABEL_SLOTS
    from train.train import TEXT_COLUMNS

    n = len(samples)
    return {
        "image": np.stack([s.image for s in samples])[..., None],
        "present": np.array([s.present for s in samples], np.float32),
        "box": np.array([(s.box[0] / 128, s.box[1] / 64, s.box[2] / 128, s.box[3] / 64) if s.present
                         else (0.0, 0.0, 0.0, 0.0) for s in samples], np.float32),
        "labels": np.zeros((n, LABEL_SLOTS), np.int32),
        "label_len": np.zeros((n,), np.int32),
        "read": np.zeros((n,), np.float32),
        "columns": np.full((n, TEXT_COLUMNS), BLANK, np.int32),
        "columns_ok": np.zeros((n,), np.float32),
    }


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------
def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Fine-tune the plate reader (and, where it misses your plates, the detection "
                               "network's presence) on your own labelled photos (DIR/labels.tsv, the "
                               "`anprd eval` format) and write a model folder with them.")
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
    parser.add_argument("--real-weight", type=float, default=0.2,
                        help="weight of your crops' CTC loss beside the synthetic crops' loss (default 0.2)")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    parser.add_argument("--learn-lookalikes", action="store_true",
                        help="let your plates teach which of O/0 and I/1 a glyph is too (your country's "
                             "letter/digit habits, read into other countries' plates); by default only "
                             "the synthetic plates teach that")
    parser.add_argument("--detector", action=argparse.BooleanOptionalAction, default=None,
                        help="fine-tune the detection network's presence and box outputs on windows of "
                             "your photos too (default: when the base model misses some of the training "
                             "part's plates); --no-detector keeps the base's")
    parser.add_argument("--detector-steps", type=int, default=800,
                        help="presence fine-tune steps (default 800)")
    parser.add_argument("--detector-lr", type=float, default=2e-4,
                        help="presence fine-tune peak learning rate (default 2e-4)")
    parser.add_argument("--detector-real-fraction", type=float, default=0.5,
                        help="share of each presence fine-tune batch cut from your photos (default 0.5)")
    parser.add_argument("--detector-real-weight", type=float, default=1.0,
                        help="weight of your windows' presence and box loss (default 1.0)")
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
    if args.detector_steps < 1:
        raise FinetuneError(f"--detector-steps must be at least 1, got {args.detector_steps}")
    if not 0 < args.detector_real_fraction <= 1:
        raise FinetuneError("--detector-real-fraction must be over 0 and at most 1, got "
                            f"{args.detector_real_fraction:g}")
    if not args.detector_real_weight > 0 or not args.detector_lr > 0:
        raise FinetuneError("--detector-real-weight and --detector-lr must be positive")
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


def _matched(item: LabelledImage, predicted: list) -> dict[int, int]:
    """Which detection (index) each labelled plate (index) of `item` was found as: IoU >= 0.3,
    Hungarian, as `anprd eval` matches."""
    from scipy.optimize import linear_sum_assignment

    from anprd.evaluate import IOU_MATCH

    if not predicted or not item.plates:
        return {}
    iou = np.array([[box.iou(p.box) for p in predicted] for box, _ in item.plates])
    rows, cols = linear_sum_assignment(-iou)
    return {int(r): int(c) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= IOU_MATCH}


def _real_plates(images: list[LabelledImage], detections: list[list], photos: list[RealPhoto] | None = None
                 ) -> tuple[list[RealPlate], int]:
    """Every labelled plate of `images` cut with context, with the detection matched to it (IoU >= 0.3,
    Hungarian, as `anprd eval` matches); and how many were found. `photos` collects each photo for
    the detector's windows."""
    import cv2

    from anprd.imageio import read_image

    plates, found = [], 0
    for item, predicted in zip(images, detections, strict=True):
        if not item.plates and photos is None:
            continue
        gray = cv2.cvtColor(read_image(item.path), cv2.COLOR_BGR2GRAY)
        matched = _matched(item, predicted)
        for i, (box, text) in enumerate(item.plates):
            detected = None
            if i in matched:
                d = predicted[matched[i]].box
                detected = (d.x, d.y, d.x + d.w, d.y + d.h)
                found += 1
            plates.append(cut_plate(gray, (box.x, box.y, box.x + box.w, box.y + box.h), detected, text))
        if photos is not None:
            photos.append(RealPhoto(
                gray, [(b.x, b.y, b.x + b.w, b.y + b.h) for b, _ in item.plates],
                [i not in matched for i in range(len(item.plates))],
                [(p.box.x, p.box.y, p.box.x + p.box.w, p.box.y + p.box.h)
                 for j, p in enumerate(predicted) if j not in matched.values()]))
    return plates, found


def format_check(images: list[LabelledImage], detections: list[list], top_n: int = 5) -> dict:
    """Whether the training part's formats, as a `FormatPrior`, read more of its plates right: the
    base model's reads of each plate it found, with and without a prior counted from every other
    training plate's format (leave-one-out, `formats_right`). The prior is used unless it reads
    fewer (a country of a few formats gains; many formats, each seen once or twice, gain nothing)."""
    from anprd.ctc_fusion import views_log_likelihoods
    from anprd.detector import free_texts

    counts = plate_formats(images, min_plates=1)
    prior = FormatPrior(counts)
    pairs = []
    for item, predicted in zip(images, detections, strict=True):
        for i, j in _matched(item, predicted).items():
            probs = predicted[j].char_probs
            if probs is None:
                continue
            reads = probs if probs.ndim == 3 else probs[None]
            texts = list(free_texts(reads, top_n, prior))
            pairs.append((item.plates[i][1], texts, views_log_likelihoods(texts, reads)))
    without, with_prior = formats_right(pairs, counts)
    return {"counts": counts, "plates": sum(counts.values()),
            "leave_one_out": {"plates_read": len(pairs), "right_without": without, "right_with": with_prior},
            "used": bool(pairs) and with_prior >= without}


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
    photos: list[RealPhoto] = []
    formats = format_check(split.train, detections, config.top_n)
    plates, found = _real_plates(split.train, detections, photos)
    del base, detections
    tune_detector = found < train_plates if args.detector is None else args.detector
    if not tune_detector:
        photos = []

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
    optimizer, train_step = _training(model, args.steps, args.lr, args.real_weight,
                                      () if args.learn_lookalikes else LOOKALIKES)
    source = BatchSource(args.workers, args.seed * 1000 + 7, backgrounds, n_synthetic, task="reader",
                         styled=args.styled) if n_synthetic else None
    if source is not None:
        source.difficulty.value = 1.0
    rng = np.random.default_rng([args.seed, 20261207])
    train_minutes = _mixed_steps(
        "fine-tuning", args.steps, source, n_real,
        lambda: make_reader_batch([augment_plate(rng, plates[i])
                                   for i in rng.integers(len(plates), size=n_real)]),
        lambda batch, is_real: train_step(batch["image"], batch["labels"], batch["label_len"],
                                          batch["columns"], batch["columns_ok"], is_real))
    synthetic_after = _reader_accuracy(predict, synthetic)
    window_model, detector_record = None, None
    if tune_detector:
        window_model, detector_record = finetune_detector(args, model_dir, base_meta, photos, backgrounds)
    del photos

    # the model folder: the base's files, the fine-tuned reader in place of the base readers
    out.mkdir(parents=True, exist_ok=True)
    base_weights = str(base_meta.get("weights", "weights.weights.h5"))
    replaced = {r.get("weights") for r in base_readers}
    if window_model is not None:
        replaced.add(base_weights)
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and path.name not in replaced:
            shutil.copyfile(path, out / path.name)
    weights_name = READER_NAME.format(base=Path(str(reader_record["weights"])).name
                                      .removeprefix("reader-").removesuffix(".weights.h5"))
    model.save_weights(out / weights_name)
    if window_model is not None:
        window_model.save_weights(out / DETECTOR_NAME)
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
        "lookalikes": "learned from the photos" if args.learn_lookalikes
        else f"{', '.join('/'.join(g) for g in LOOKALIKES)} taught by synthetic plates only",
        "styled": args.styled,
        "backgrounds": backgrounds,
        "data": str(folder.resolve()),
        "train_files_sha256": names_hash(split.train),
        "heldout_files_sha256": names_hash(split.heldout),
        "split": split_record,
        "formats": plate_formats(split.train),
        "formats_prior": {key: value for key, value in formats.items() if key != "counts"},
        "heldout_before": before,
        "heldout_after": None,
        "train_part_before": train_before,
        "synthetic_reader_check": {"count": args.check_count, "seed": SYNTHETIC_CHECK[1],
                                   "styled": args.styled, "before": synthetic_before,
                                   "after": synthetic_after},
        "training_minutes": round(train_minutes, 1),
        "detector": detector_record if detector_record is not None else {
            "fine_tuned": False,
            "why": "--no-detector" if args.detector is False else
            "the base model found every plate of the training part"},
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
    if detector_record is not None:
        meta["weights"] = DETECTOR_NAME
        meta["finetuned_from"] = base_weights
        meta["stages"] = [*base_meta.get("stages", []),
                          {"command": command, "seed": args.seed, "steps": args.detector_steps,
                           "minutes": detector_record["training_minutes"]}]
        detector_record["fine_tuned"] = True
        detector_record["weights"] = DETECTOR_NAME
    if formats["used"]:
        meta["formats"] = {"counts": formats["counts"], "plates": formats["plates"],
                           "source": "the labels of the fine-tune's training part"}
    else:
        meta.pop("formats", None)  # a base's formats are not these photos'
    meta["finetune"] = record
    (out / "finetune-split.json").write_text(json.dumps(
        {"data": str(folder.resolve()), **split_record, "train": [i.path.name for i in split.train],
         "heldout": [i.path.name for i in split.heldout]}, indent=1) + "\n")
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    record["exported"] = _export(out, [Path(b) for b in backgrounds])
    meta = json.loads((out / "model.json").read_text())  # with the export's record
    meta["finetune"] = record

    if split.heldout:
        tuned = PlateDetector(out, config.model_copy(update={"model": str(out.resolve())}), base_dir)
        record["heldout_after"] = _figures(_score(tuned, split.heldout, "held-out photos, fine-tuned"))
    record["minutes"] = round((time.time() - started) / 60, 1)
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return record


def _export(out: Path, backgrounds: list[Path]) -> str:
    """The model folder's networks as ONNX files (float32 and int8, `train.export`), so that the
    daemon and the CLI run the fine-tuned folder without TensorFlow as they run the shipped one; the
    base's exported files of networks that changed are removed. Without the converter, or if it
    fails, the fine-tuned networks run on TensorFlow: a warning, not an error (the training is kept).
    Returns what model.json's "finetune" record says of it."""
    from anprd.runtime import first_line
    from train.export import export_onnx

    try:
        files = export_onnx(out, ("float32", "int8"), backgrounds)["files"]
    except ImportError as exc:  # tf2onnx or onnx missing
        why = f"not exported ({first_line(exc)}; pip install -e '.[export]', then make export MODEL={out})"
    except Exception as exc:  # noqa: BLE001 - a converter fails in many ways; the weights are saved
        why = f"not exported ({first_line(exc)}; make export MODEL={out} tries again)"
    else:
        why = ""
    if why:
        print(f"anprd finetune: {why}: the fine-tuned networks run on TensorFlow", file=sys.stderr)
        return why
    for path in out.glob("*.onnx"):
        if path.name not in files:  # a base network's file whose weights this folder replaced
            path.unlink()
    return "float32 and int8 ONNX (train.export): " + ", ".join(sorted(files))


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


def merged_classes(groups: tuple[str, ...]) -> np.ndarray:
    """(classes, merged classes) 0/1 matrix of the reader's classes (ALPHABET, then the blank) with
    the characters of each group in `groups` counted as one class; the blank stays last."""
    from anprd.ctc import ALPHABET

    first = {c: group[0] for group in groups for c in group}
    kept = [c for c in ALPHABET if first.get(c, c) == c]
    matrix = np.zeros((len(ALPHABET) + 1, len(kept) + 1), np.float32)
    for i, c in enumerate(ALPHABET):
        matrix[i, kept.index(first.get(c, c))] = 1.0
    matrix[len(ALPHABET), len(kept)] = 1.0
    return matrix


def _mixed_steps(desc: str, steps: int, source, n_real: int, real_batch: Callable[[], dict],
                 train_step: Callable[[dict, np.ndarray], tuple]) -> float:
    """`steps` training steps on batches of `source`'s synthetic samples followed by `n_real` of the
    user's (`real_batch()`), with a progress bar of both losses; closes `source`; returns minutes.
    `train_step(batch, is_real)` returns the (synthetic, yours) losses."""
    bar = _bar(desc, steps)
    losses: list[tuple[float, float]] = []
    started = time.time()
    try:
        for step in range(1, steps + 1):
            real = real_batch()
            batch = real if source is None else {key: np.concatenate((value, real[key]))
                                                 for key, value in _synthetic_batch(source).items()}
            is_real = np.zeros(len(batch["image"]), np.float32)
            is_real[-n_real:] = 1.0
            synthetic_loss, real_loss = train_step(batch, is_real)
            losses.append((float(synthetic_loss), float(real_loss)))
            bar.update(1)
            if step % 25 == 0 or step == steps:
                mean = np.mean(losses[-25:], axis=0)
                bar.set_postfix(synthetic=f"{mean[0]:.3f}", yours=f"{mean[1]:.3f}")
    finally:
        bar.close()
        if source is not None:
            source.close()
    return (time.time() - started) / 60


def _optimizer(total_steps: int, lr: float, warmup_steps: int):
    """Adam with a linear warm-up to `lr` over at most `warmup_steps` (a tenth of a short run), then
    cosine decay to 3% of it; gradients clipped at norm 5."""
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=total_steps, alpha=0.03, warmup_target=lr,
        warmup_steps=max(1, min(warmup_steps, total_steps // 10)))
    return keras.optimizers.Adam(schedule, clipnorm=5.0)


def _training(model, total_steps: int, lr: float, real_weight: float, lookalikes: tuple[str, ...] = ()):
    """Adam with a short warm-up and cosine decay; the loss is train.train_reader's (per-column
    cross-entropy + 0.1 x CTC) over the synthetic crops plus `real_weight` x CTC over the user's.

    The user's CTC counts each group of `lookalikes` as one character: a reader fine-tuned on US
    plates, which have no O or I, otherwise learns to read every round glyph as 0 and every bar as 1,
    and misreads the O and I of other countries' plates (on `eu`, 5 of the 6 plates it lost). The
    user's plates still teach the shapes, the layout and every other character; which look-alike a
    glyph is stays as the synthetic plates (and `detector.countries`) teach it."""
    import tensorflow as tf

    from anprd.ctc import BLANK

    optimizer = _optimizer(total_steps, lr, 150)
    merge = tf.constant(merged_classes(lookalikes))
    merge_index = tf.constant(merged_classes(lookalikes).argmax(axis=1).astype(np.int32))

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
            if lookalikes:  # log of the summed probabilities of each group's classes
                top = tf.reduce_max(logits, axis=-1, keepdims=True)
                merged = tf.math.log(tf.tensordot(tf.exp(logits - top), merge, axes=1) + 1e-30) + top
                real_ctc = tf.nn.ctc_loss(labels=tf.gather(merge_index, labels), logits=merged,
                                          label_length=label_len,
                                          logit_length=tf.fill([tf.shape(image)[0]], logits.shape[1]),
                                          logits_time_major=False, blank_index=merged.shape[-1] - 1)
            else:
                real_ctc = ctc
            real_loss = tf.reduce_sum(is_real * real_ctc) / tf.maximum(tf.reduce_sum(is_real), 1.0)
            loss = synthetic_loss + real_weight * real_loss
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return synthetic_loss, real_loss

    return optimizer, train_step


def _detector_training(model, total_steps: int, lr: float, real_weight: float):
    """Adam with a short warm-up and cosine decay on the window model. The synthetic windows learn
    from train.train's loss (presence + 5 x box L1 + 0.1 x CTC + per-column cross-entropy); the
    user's, whose characters' places are unknown, from presence and box alone, times `real_weight`."""
    import tensorflow as tf

    from anprd.ctc import BLANK

    optimizer = _optimizer(total_steps, lr, 100)

    @tf.function(reduce_retracing=True)
    def train_step(image, present, box, labels, label_len, read, columns, columns_ok, is_real):
        with tf.GradientTape() as tape:
            out = model(tf.cast(image, tf.float32), training=True)
            presence = tf.nn.sigmoid_cross_entropy_with_logits(present, out["presence"][:, 0])
            box_l1 = tf.reduce_sum(tf.abs(box - out["box"]), axis=1)

            def detection_loss(mask):
                positives = mask * present
                return (tf.reduce_sum(mask * presence) / tf.maximum(tf.reduce_sum(mask), 1.0)
                        + 5.0 * tf.reduce_sum(positives * box_l1) / tf.maximum(tf.reduce_sum(positives), 1.0))

            synthetic = 1.0 - is_real
            ctc = tf.nn.ctc_loss(labels=labels, logits=out["text"], label_length=tf.maximum(label_len, 1),
                                 logit_length=tf.fill([tf.shape(image)[0]], out["text"].shape[1]),
                                 logits_time_major=False, blank_index=BLANK)
            read = read * synthetic
            columns_ok = columns_ok * synthetic
            column_ce = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(columns, out["text"]), axis=1)
            synthetic_loss = (
                detection_loss(synthetic)
                + 0.1 * tf.reduce_sum(ctc * read) / tf.maximum(tf.reduce_sum(read), 1.0)
                + tf.reduce_sum(column_ce * columns_ok) / tf.maximum(tf.reduce_sum(columns_ok), 1.0))
            real_loss = detection_loss(is_real)
            loss = synthetic_loss + real_weight * real_loss
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return synthetic_loss, real_loss

    return optimizer, train_step


def _presence_figures(predict, batch: dict[str, np.ndarray]) -> dict[str, float]:
    """train.train's window metrics of a fixed window set: presence at 0.5 and 0.99, and reading
    where the set has text to read (the user's windows have none)."""
    import warnings

    from train.train import evaluate

    with warnings.catch_warnings():  # no text to read: numpy's mean of nothing
        warnings.simplefilter("ignore", RuntimeWarning)
        figures = evaluate(predict, batch)
    if not batch["read"].any():
        figures = {key: value for key, value in figures.items() if key.startswith("presence")}
    return {key: round(value, 4) for key, value in figures.items()}


def finetune_detector(args: argparse.Namespace, model_dir: Path, base_meta: dict, photos: list[RealPhoto],
                      backgrounds: list[str]):
    """The presence fine-tune: the base's window model (whose layers the detection model shares)
    trained on windows of the user's photos (`detector_window`) mixed with synthetic windows
    (`train.gen.sample_window`). Returns (the window model, the record for model.json)."""
    import tensorflow as tf

    from anprd.model import NetConfig, PlateNet
    from train.train import BatchSource, generate_batches

    tf.keras.utils.set_random_seed(args.seed + 1)
    net = PlateNet(NetConfig.from_json(base_meta["net"]))
    model = net.window_model
    model.load_weights(model_dir / str(base_meta.get("weights", "weights.weights.h5")))

    @tf.function(reduce_retracing=True)
    def predict(image):
        return model(image, training=False)

    rng = np.random.default_rng([args.seed, 20261208])
    check = generate_batches(args.check_count, DETECTOR_CHECK[1], backgrounds, 1.0, styled=args.styled)
    real_check = make_window_batch([detector_window(rng, photos[int(rng.integers(len(photos)))], 0.5)
                                    for _ in range(args.check_count)])
    before = {"synthetic": _presence_figures(predict, check), "yours": _presence_figures(predict, real_check)}

    n_real = max(1, round(args.batch_size * args.detector_real_fraction))
    n_synthetic = args.batch_size - n_real
    optimizer, train_step = _detector_training(model, args.detector_steps, args.detector_lr,
                                               args.detector_real_weight)
    source = BatchSource(args.workers, args.seed * 1000 + 11, backgrounds, n_synthetic, task="window",
                         styled=args.styled) if n_synthetic else None
    if source is not None:
        source.difficulty.value = 1.0
    minutes = _mixed_steps(
        "fine-tuning the detector", args.detector_steps, source, n_real,
        lambda: make_window_batch([detector_window(rng, photos[int(i)])
                                   for i in rng.integers(len(photos), size=n_real)]),
        lambda batch, is_real: train_step(batch["image"], batch["present"], batch["box"], batch["labels"],
                                          batch["label_len"], batch["read"], batch["columns"],
                                          batch["columns_ok"], is_real))
    after = {"synthetic": _presence_figures(predict, check), "yours": _presence_figures(predict, real_check)}
    record = {
        "steps": args.detector_steps, "batch_size": args.batch_size,
        "real_fraction": args.detector_real_fraction, "real_weight": args.detector_real_weight,
        "lr": args.detector_lr, "window_kinds": WINDOW_KINDS, "missed_weight": MISSED_WEIGHT,
        "losses": "synthetic windows: presence + 5 x box L1 + 0.1 x CTC + per-column; yours: presence "
                  "+ 5 x box L1 (no text)",
        "photos": len(photos), "plates": sum(len(p.boxes) for p in photos),
        "plates_missed_by_base": sum(sum(p.missed) for p in photos),
        "window_check": {"count": args.check_count, "synthetic_seed": DETECTOR_CHECK[1],
                         "yours": "windows of the training photos, half-strength augmentation",
                         "before": before, "after": after},
        "training_minutes": round(minutes, 1),
    }
    return model, record


def formats_line(record: dict) -> str:
    """The fine-tune's line on the training labels' formats: the commonest, the leave-one-out check
    and whether the folder reads with them."""
    check = record["formats_prior"]["leave_one_out"]
    common = ", ".join(f"{form} ({count})" for form, count in record["formats"].items())
    if sum(record["formats"].values()) < record["formats_prior"]["plates"]:  # rarer ones too
        common += ", ..." if common else "none of 3 or more plates"
    return (f"your plates' formats as a reading prior ({common}): the base model reads "
            f"{check['right_without']} of {check['plates_read']} training plates right without, "
            f"{check['right_with']} with (each plate left out of the counts): "
            + ("kept in the model folder (detector.model_formats: false turns it off)"
               if record["formats_prior"]["used"] else "not used"))


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
        print(json.dumps({"model": str(args.out), "before": before, "after": after, "split": record["split"],
                          "formats": record["formats"], "formats_prior": record["formats_prior"],
                          "minutes": record["minutes"]}))
    else:
        _print_figures(before, after, record["split"]["heldout_images"], record["split"]["heldout_plates"])
        synthetic = record["synthetic_reader_check"]
        print(f"synthetic plates read by the reader alone: {100 * synthetic['before']['read_acc']:.1f}% -> "
              f"{100 * synthetic['after']['read_acc']:.1f}% ({synthetic['count']} crops)")
        detector = record["detector"]
        if detector["fine_tuned"]:
            check = detector["window_check"]
            for part in ("synthetic", "yours"):
                before_part, after_part = check["before"][part], check["after"][part]
                print(f"{part} windows, presence accuracy {100 * before_part['presence_acc']:.1f}% -> "
                      f"{100 * after_part['presence_acc']:.1f}%, false positives at 0.99 "
                      f"{100 * before_part['presence_fp_at_0.99']:.1f}% -> "
                      f"{100 * after_part['presence_fp_at_0.99']:.1f}% ({check['count']} windows)")
        else:
            print(f"detection network not fine-tuned: {detector['why']}")
        print(formats_line(record))
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
