"""Still-image plate detection: pyramid -> convolutional presence grid -> grouped hits -> read.

1. Pyramid: the image is scaled so plates between `min_plate_width` and `max_plate_width` pixels fall
   into the 60-80% width band the network was trained on, one level per `pyramid_step`.
2. The detection twin of the network runs over each level at once; every output cell is a 128x64
   window on an 8-pixel grid with a presence score and a regressed plate box.
3. Hits above `presence_threshold` overlap; they are grouped around the strongest by plate-box IoU
   (`group_hits`), strays at a plate's edge dropped. The seed took the intersection of the group's
   windows as the box; a regressed plate box, averaged over the group by score, fits the plate itself
   and scores far better on IoU.
4. Each group is re-read by the window model on a crop centred on its box: that pass verifies
   presence and refines the box. The plate reader (`anprd.model.build_reader`, when the model folder
   has readers) then reads the refined box on tight crops scaled by `read_scales`, each reader
   reading each crop; without a reader, the window model's own read and its reads of the refined box
   at those scales are used. Each read's beam search (optionally under plate patterns) proposes
   texts; a text's score is the geometric mean of its exact CTC probabilities over the reads
   (`anprd.ctc_fusion.views_log_likelihoods`), which gives the plate's text, its probability and the
   top-N candidates. Several views and readers misread the same character less often than one does
   (docs/experiments.md, "Reading several views").

With a pre-filter, steps 1-2 run inside the regions it proposes, at the pyramid levels that bring
the plate widths a region implies into the 60-80% band; the crops of every level are packed side by
side on a few pages (`pack_crops`), one network call per page. `prefilter: proposer`
(cascade/proposer.py): a small network over an octave pyramid predicts each plate's place and
width, so a region is searched at one or two levels. `prefilter: hog` (cascade/hog.py): a HOG +
linear SVM window classifier; its coarse levels, for plates of at least `prefilter_full_scan_width`
pixels, are also scanned whole, and their groups read only where the regions proposed nothing.
Steps 3-4 are unchanged.

Where steps 1-2 look is a search plan (`cascade.SearchPlan`): a still image gets `still_plan()`,
the path above; a video frame gets one from its camera's cascade (`cascade.FrameCascade`: regions
around the live tracks, the pre-filter inside what moved, the whole frame on a schedule). A plan's
track region may also say how step 4 reads the plate found on its predicted box (`Region.read`): a
track whose fused reading is sure is read in one view on some frames and only verified (box and
presence, no text) on the others; every other plate is read in full.

    detector = PlateDetector.from_config(DetectorConfig())
    detections = detector.detect(bgr_image)
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from anprd.config.detector import DetectorConfig
from anprd.ctc import ALPHABET, Pattern, beam_search, parse_pattern, pattern_beam_search
from anprd.ctc_fusion import views_log_likelihoods
from anprd.formats import CountryPrior, FormatPrior
from anprd.runtime import detector_weights_name, first_line, load_networks
from anprd.types import Box, Candidate, Detection
from cascade.models import ModelError, resolve_model_dir
from cascade.plan import (
    READ_FULL,
    READ_NONE,
    READ_ONE,
    WHOLE_FRAME,
    Prefilter,
    Region,
    SearchPlan,
    not_covered,
    still_plan,
)

if TYPE_CHECKING:
    from cascade.hog import HogPrefilter
    from cascade.proposer import PlateProposer

__all__ = ["ModelError", "PlateDetector", "fits_page", "free_texts", "grid_shape", "level_crops",
           "pack_crops", "pyramid_scales", "read_crop_window", "reader_crop", "resolve_model_dir",
           "whole_scan_scales"]

log = logging.getLogger(__name__)

WINDOW_W, WINDOW_H = 128, 64
READER_W, READER_H = 128, 32  # anprd.model.READER_W/H; not imported from there, which loads Keras
DUPLICATE_IOU = 0.5  # plate boxes overlapping this much are one plate
STRAY_IOU = 0.1  # a weaker hit overlapping a group's best this much is a stray of that plate (`group_hits`)
PLATE_FILL = 0.70  # fraction of the window width a re-read plate is scaled to (middle of 60-80%)
HINT_IOU = 0.3  # a verified plate box overlapping a region's plate box this much is that plate (read modes)
REVERIFY_ROUNDS = 1  # re-verifications of a rejected plate on its own refined box (`PlateDetector._verify`)
REVERIFY_IOU = 0.8  # a refined box overlapping its proposal less than this moved enough to verify again
ONE_VIEW_INVERT_BELOW = math.log(0.5)  # a one-view read surer than this is not tried inverted as well
MIN_IMAGE_SIDE = 8  # smaller images hold no findable plate (the narrowest searched for is tens of pixels)


def pyramid_scales(height: int, width: int, config: DetectorConfig) -> list[float]:
    """Scale factors, largest first, that bring plates of the configured widths into the window."""
    target = 0.75 * WINDOW_W  # where a plate of the extreme widths lands in the window
    largest = target / config.min_plate_width
    smallest = 0.6 * WINDOW_W / config.max_plate_width
    scales = []
    s = largest
    while s >= smallest * 0.999 and height * s >= WINDOW_H and width * s >= WINDOW_W:
        scales.append(s)
        s /= config.pyramid_step
    if not scales:  # image smaller than one window at every useful scale: look at it once, fitted
        scales.append(max(WINDOW_H / height, WINDOW_W / width))
    return scales


def whole_scan_scales(scales: list[float], full_scan_width: float) -> list[float]:
    """The pyramid levels scanned whole even with the pre-filter on: those whose every plate in the
    window's 60-80% band is at least `full_scan_width` pixels wide."""
    return [s for s in scales if 0.6 * WINDOW_W / s >= full_scan_width]


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def read_crop_window(gray: np.ndarray, box: tuple[float, float, float, float]
                     ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A 64x128 window centred on plate box (x0, y0, x1, y1), the plate ~70% of its width.

    Returns the window and (x, y, sx, sy) such that image = (window_x / sx + x, window_y / sy + y).
    """
    x0, y0, x1, y1 = box
    pw, ph = max(4.0, x1 - x0), max(2.0, y1 - y0)
    win_w = max(pw / PLATE_FILL, 2 * ph / 0.75)  # tall plates: keep them under 75% of the height
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = math.floor(cx - win_w / 2), math.floor(cy - win_w / 4)
    right, bottom = left + max(2, math.ceil(win_w)), top + max(1, math.ceil(win_w / 2))
    h, w = gray.shape[:2]
    region = gray[max(0, top): max(0, min(h, bottom)), max(0, left): max(0, min(w, right))]
    if region.size == 0:
        region = np.zeros((1, 1), np.uint8)
    else:  # parts outside the image repeat its border, as the pyramid's windows never see them
        region = cv2.copyMakeBorder(region, max(0, -top), max(0, bottom - h), max(0, -left),
                                    max(0, right - w), cv2.BORDER_REPLICATE)
    downscale = region.shape[1] > WINDOW_W
    window = cv2.resize(region, (WINDOW_W, WINDOW_H),
                        interpolation=cv2.INTER_AREA if downscale else cv2.INTER_LINEAR)
    return window, (float(left), float(top), WINDOW_W / (right - left), WINDOW_H / (bottom - top))


READER_MARGIN_X, READER_MARGIN_Y = 0.06, 0.15  # of the plate box, each side: room for box error


def reader_crop(gray: np.ndarray, box: tuple[float, float, float, float]
                ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The reader's input: plate box (x0, y0, x1, y1) with a small margin, stretched to 32x128.

    Stretching (rather than keeping the aspect) gives every plate shape the whole input: a 4.7:1 EU
    plate's characters are ~22 px tall here against ~14 px in the detector's 64x128 window.
    Returns the crop and (x, y, sx, sy) such that image = (crop_x / sx + x, crop_y / sy + y).
    """
    x0, y0, x1, y1 = box
    pw, ph = max(4.0, x1 - x0), max(2.0, y1 - y0)
    left, right = x0 - READER_MARGIN_X * pw, x1 + READER_MARGIN_X * pw
    top, bottom = y0 - READER_MARGIN_Y * ph, y1 + READER_MARGIN_Y * ph
    h, w = gray.shape[:2]
    # sub-pixel exact: an affine map from the box to the crop, replicating the border outside the image
    sx, sy = READER_W / (right - left), READER_H / (bottom - top)
    x_shift = y_shift = 0  # where the (possibly smoothed) patch below starts in the image
    if sx < 1 or sy < 1:  # shrinking: smooth first, as INTER_AREA would
        sigma_x, sigma_y = max(0.01, 0.5 / sx - 0.25), max(0.01, 0.5 / sy - 0.25)
        ix0, iy0 = max(0, int(left) - 4), max(0, int(top) - 4)
        ix1, iy1 = min(w, int(math.ceil(right)) + 4), min(h, int(math.ceil(bottom)) + 4)
        if ix1 > ix0 and iy1 > iy0:
            gray = cv2.GaussianBlur(gray[iy0:iy1, ix0:ix1], (0, 0), sigmaX=sigma_x, sigmaY=sigma_y)
            x_shift, y_shift = ix0, iy0
            left, right, top, bottom = left - ix0, right - ix0, top - iy0, bottom - iy0
    matrix = np.array([[sx, 0, -left * sx], [0, sy, -top * sy]], np.float32)
    crop = cv2.warpAffine(gray, matrix, (READER_W, READER_H), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return crop, (float(left + x_shift), float(top + y_shift), sx, sy)


@dataclass(frozen=True)
class Calibration:
    """Maps a reading's probability to how often such readings are right: Platt scaling,
    sigmoid(a * logit(p) + b), fitted on synthetic validation scenes (`python -m train.calibrate`).
    The identity (a=1, b=0) for a model without one."""

    a: float = 1.0
    b: float = 0.0

    @classmethod
    def from_meta(cls, record: object, where: Path) -> Calibration:
        if record is None:
            return cls()
        try:
            a, b = float(record["a"]), float(record["b"])  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            raise ModelError(f"{where}: 'calibration' needs numbers 'a' and 'b'") from None
        if not (math.isfinite(a) and math.isfinite(b) and a > 0):
            raise ModelError(f"{where}: 'calibration' needs a > 0 and finite b")
        return cls(a, b)

    def __call__(self, probability: float) -> float:
        if self.a == 1.0 and self.b == 0.0:
            return float(probability)
        p = min(max(float(probability), 1e-9), 1 - 1e-9)
        return 1.0 / (1.0 + math.exp(-(self.a * math.log(p / (1 - p)) + self.b)))


def _best_path_log_probability(reads: np.ndarray) -> float:
    """How sure K reads (K, T, C) of one plate are: the mean log probability of their best paths.
    Compares a plate read as it is with the same plate inverted."""
    return float(np.log(np.clip(reads.max(axis=-1), 1e-12, 1.0)).sum(axis=-1).mean())


def free_texts(reads: np.ndarray, top_n: int, format_prior: FormatPrior | None = None) -> dict[str, None]:
    """The texts a plate's K reads (K, T, C) propose, in order: each read's `top_n` beam search texts,
    then, with a format prior, their look-alike variants that fit its known formats."""
    texts = dict.fromkeys(text for probs in reads for text, _ in beam_search(probs, top_n=top_n))
    if format_prior:
        texts.update(dict.fromkeys(v for t in list(texts) for v in format_prior.variants(t)))
    return texts


def _hinted_modes(kept: list[int], boxes: list[Box],
                  hints: tuple[tuple[tuple[float, float, float, float], str], ...]) -> dict[int, str]:
    """Read mode of each hinted plate among `kept`: each hint goes to the verified box that overlaps
    its plate box most (IoU at least `HINT_IOU`), best pairs first, one box per hint and one hint per
    box, so a second box on a tracked plate (a line of its text) is still read in full."""
    pairs = []
    for h, ((x0, y0, x1, y1), mode) in enumerate(hints):
        plate = Box(x0, y0, x1 - x0, y1 - y0)
        for i in kept:
            iou = boxes[i].iou(plate)
            if iou >= HINT_IOU:
                pairs.append((iou, i, h, mode))
    modes: dict[int, str] = {}
    used: set[int] = set()
    for _, i, h, mode in sorted(pairs, key=lambda p: -p[0]):
        if i not in modes and h not in used:
            modes[i] = mode
            used.add(h)
    return modes


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Per-column CTC posteriors from the networks' logits, float32."""
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (probs / probs.sum(axis=-1, keepdims=True)).astype(np.float32)


def _scaled(box: Box, factor: float) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of `box` scaled by `factor` about its centre."""
    cx, cy = box.center
    half_w, half_h = box.w * factor / 2, box.h * factor / 2
    return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


def _box_iou_matrix(boxes: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = boxes.T
    area = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    iw = np.maximum(0, np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None]))
    ih = np.maximum(0, np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None]))
    inter = iw * ih
    return inter / np.maximum(area[:, None] + area[None] - inter, 1e-6)


def group_hits(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[np.ndarray]:
    """Hits clustered around the strongest: the best hit not yet taken takes every free hit whose plate
    box overlaps its own more than `iou`, and drops the free hits that overlap it less but more than
    `STRAY_IOU` as strays of the same plate. Index arrays, best group first (the best hit is added by
    hand: a degenerate box has IoU 0 with itself).

    Connected components of overlapping hits (the seed's grouping, used here until 2026-12-04, commit
    170281b) chain through the loose boxes of coarse levels: two plates 20 px apart became one box
    reading both.
    """
    order = np.argsort(-scores, kind="stable")
    overlap = _box_iou_matrix(boxes)
    free = np.ones(len(boxes), bool)
    groups = []
    for best in order:
        if not free[best]:
            continue
        members = np.union1d(np.flatnonzero(free & (overlap[best] > iou)), [best])
        free[members] = False
        free[overlap[best] > STRAY_IOU] = False
        groups.append(members)
    return groups


@dataclass(frozen=True)
class _Hit:
    boxes: np.ndarray  # N x 4 plate boxes (x0, y0, x1, y1) in image pixels
    scores: np.ndarray  # N presence probabilities


_Proposal = tuple[tuple[float, float, float, float], float]  # plate box (x0, y0, x1, y1), best hit score


def _unproposed(extra: list[_Proposal], proposed: list[_Proposal]) -> list[_Proposal]:
    """The `extra` proposals whose box overlaps no `proposed` box as much as two detections of one
    plate do (`DUPLICATE_IOU`)."""
    if not extra or not proposed:
        return extra
    overlap = _box_iou_matrix(np.array([b for b, _ in proposed + extra]))[len(proposed):, :len(proposed)]
    return [p for p, row in zip(extra, overlap, strict=True) if row.max() < DUPLICATE_IOU]


def _empty_hits() -> _Hit:
    return _Hit(np.zeros((0, 4)), np.zeros((0,)))


def _top_hits(boxes: list[np.ndarray], scores: list[np.ndarray]) -> _Hit:
    if not boxes:
        return _empty_hits()
    all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
    keep = np.argsort(-all_scores)[:3000]  # bound the grouping cost on pathological images
    return _Hit(all_boxes[keep], all_scores[keep])


def _region_crop(region: tuple[float, float, float, float], scale: float, height: int, width: int
                 ) -> tuple[int, int, int, int]:
    """Integer crop (x0, y0, x1, y1) holding `region`, at least one window plus two grid steps in each
    direction at `scale`, moved inside the image where it can be."""
    x0, y0, x1, y1 = region
    need_w, need_h = (WINDOW_W + 16) / scale, (WINDOW_H + 16) / scale
    if x1 - x0 < need_w:
        cx = (x0 + x1) / 2
        x0, x1 = cx - need_w / 2, cx + need_w / 2
    if y1 - y0 < need_h:
        cy = (y0 + y1) / 2
        y0, y1 = cy - need_h / 2, cy + need_h / 2
    shift_x = max(0.0, -x0) - max(0.0, x1 - width)
    shift_y = max(0.0, -y0) - max(0.0, y1 - height)
    return (max(0, math.floor(x0 + shift_x)), max(0, math.floor(y0 + shift_y)),
            min(width, math.ceil(x1 + shift_x)), min(height, math.ceil(y1 + shift_y)))


def level_crops(regions: list[Region], scale: float, height: int, width: int
                ) -> list[tuple[int, int, int, int]]:
    """The crops (x0, y0, x1, y1) the pyramid level at `scale` runs on: one per region whose plate
    widths overlap the widths the level brings into the window's 60-80% band, each at least a window
    plus two grid steps at that level (`_region_crop`).

    Overlapping crops are not merged, although that would save CNN time (15-20% on 720p street
    frames): each crop puts the level's 8-pixel grid and resampling at its own phase, and those
    extra looks at a plate are worth plates (merged, `eu` recall fell from 94.4% to 88.0%)."""
    band = (0.6 * WINDOW_W / scale, 0.8 * WINDOW_W / scale)
    return [_region_crop(r.box, scale, height, width) for r in regions
            if band[1] >= r.plate_widths[0] and band[0] <= r.plate_widths[1]]


def grid_shape(height: int, width: int) -> tuple[int, int]:
    """Rows and columns of the detection network's grid over an input of this size: a window every
    8 px that starts inside it, ceil(height / 8) - 7 rows and ceil(width / 8) - 15 columns."""
    return -(-height // 8) - (WINDOW_H // 8 - 1), -(-width // 8) - (WINDOW_W // 8 - 1)


MAX_LEVEL_PIXELS = 2048 * 2048  # larger pyramid levels run in tiles (`PlateDetector._level_grid`)
TILE_CONTEXT = 40  # pixels around a tile's windows: a cell's view reaches 34 px past its window

PAGE_WIDTH = 1024  # page width for region crops
PAGE_ROWS = 2048  # most rows per page: with the width, bounds one call's memory
PAGE_ROW_STEP = 64  # page heights are rounded up to this, so that page shapes repeat from frame to frame
PAGE_GAP = 8  # pixels between packed crops, filled with each crop's edge pixels


_Page = tuple[tuple[int, int], list[tuple[int, tuple[int, int]]]]  # (height, width), [(crop index, (y, x))]


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def fits_page(height: int, width: int) -> bool:
    """Whether a crop of this size, with its gap, fits on a page."""
    return height + PAGE_GAP <= PAGE_ROWS and width + PAGE_GAP <= PAGE_WIDTH


def pack_crops(sizes: list[tuple[int, int]]) -> list[_Page]:
    """Pages (height, width) holding crops of `sizes` (height, width) side by side on shelves, each
    with the crops it holds as (index, (y, x)) at multiples of the grid stride. Every crop must fit
    a page (`fits_page`).

    One network call per page instead of one per crop or batch: a call costs about 2 ms however small
    its input, and each new input shape costs 3-4 ms more (oneDNN builds its kernels per shape), while
    pages come in a few repeating shapes. At multiples of 8 a crop's cells are its own grid's.
    """
    if not all(fits_page(h, w) for h, w in sizes):
        raise ValueError(f"a crop does not fit a {PAGE_ROWS}x{PAGE_WIDTH} page")
    footprints = [(_round_up(h + PAGE_GAP, 8), _round_up(w + PAGE_GAP, 8)) for h, w in sizes]
    pages: list[_Page] = []
    placed: list[tuple[int, tuple[int, int]]] = []
    y = x = shelf = 0
    for index in sorted(range(len(sizes)), key=lambda i: -footprints[i][0]):
        fh, fw = footprints[index]
        if x + fw > PAGE_WIDTH:  # next shelf
            y, x, shelf = y + shelf, 0, 0
        if y + max(shelf, fh) > PAGE_ROWS:  # next page
            pages.append(((_round_up(y + shelf, PAGE_ROW_STEP), PAGE_WIDTH), placed))
            placed, y, x, shelf = [], 0, 0, 0
        placed.append((index, (y, x)))
        x, shelf = x + fw, max(shelf, fh)
    if placed:
        pages.append(((_round_up(y + shelf, PAGE_ROW_STEP), PAGE_WIDTH), placed))
    return pages


class PlateDetector:
    """Loads the model once and finds plates in images. Not thread-safe; one per inference worker.

    `base_dir` (the config file's folder) is where a relative `prefilter_model` is looked for first.
    """

    def __init__(self, model_dir: Path, config: DetectorConfig, base_dir: Path | None = None) -> None:
        self.config = config
        self.model_dir = model_dir
        self.last_regions = 0  # regions the pre-filter proposed in the last detect() (bench, logs)
        self._base_dir = base_dir
        self._prefilters: dict[tuple, HogPrefilter | PlateProposer] = {}
        self._active_prefilter()  # before the networks: a bad pre-filter model fails fast
        meta_path = model_dir / "model.json"
        try:
            self.meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{meta_path}: unreadable model metadata ({first_line(exc)})") from None
        if (not isinstance(self.meta, dict) or self.meta.get("format") != "anprd-plate-net/1"
                or self.meta.get("alphabet") != ALPHABET):
            raise ModelError(f"{meta_path}: not an anprd plate model of a known format")
        weights = model_dir / detector_weights_name(self.meta, meta_path)
        if not weights.is_file():
            raise ModelError(f"{weights}: model weights missing")
        self.patterns: list[Pattern] = [parse_pattern(n, s) for n, s in config.patterns.items()]
        self.country_prior = CountryPrior(config.countries)
        self.format_prior = self._format_prior(meta_path) if config.model_formats else None
        self.calibration = Calibration.from_meta(self.meta.get("calibration"), meta_path)

        # the networks, on the runtime the config picks (anprd/runtime.py); TensorFlow is imported
        # only when it serves one of them
        self.networks = load_networks(model_dir, self.meta, config, readers=config.reader == "auto")
        self.readers = self.networks.readers
        self.device = self.networks.description
        log.info("model %s loaded: %s", model_dir, self.device)

    def _format_prior(self, meta_path: Path) -> FormatPrior | None:
        """The model folder's own plate formats (`anprd finetune` writes them), or None."""
        record = self.meta.get("formats")
        if record is None:
            return None
        counts = record.get("counts") if isinstance(record, dict) else None
        if (not isinstance(counts, dict) or not all(isinstance(n, int) and n >= 0 for n in counts.values())
                or not all(isinstance(f, str) and f and set(f) <= {"@", "#"} for f in counts)):
            raise ModelError(f"{meta_path}: 'formats' must hold 'counts', a count per format of @ and #")
        return FormatPrior(counts) or None

    @classmethod
    def from_config(cls, config: DetectorConfig, base_dir: Path | None = None) -> PlateDetector:
        return cls(resolve_model_dir(config.model, base_dir), config, base_dir)

    # -- stage 1-2: the pyramid and the convolutional presence grid ----------------------------------
    def _level_hits(self, logits: np.ndarray, box_frac: np.ndarray, scale: float,
                    origin: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray] | None:
        """Hits of one level's (or one crop's) presence grid, (rows, cols) logits and (rows, cols, 4)
        plate boxes as fractions of the window, as plate boxes in image pixels (`origin` is where
        the level's crop starts)."""
        threshold_logit = math.log(self.config.presence_threshold / (1 - self.config.presence_threshold))
        rows, cols = np.nonzero(logits > threshold_logit)
        if len(rows) == 0:
            return None
        frac = box_frac[rows, cols]
        x = cols[:, None] * 8 + frac[:, [0, 2]] * WINDOW_W  # (N, 2): x0, x1
        y = rows[:, None] * 8 + frac[:, [1, 3]] * WINDOW_H  # (N, 2): y0, y1
        boxes = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1) / scale
        boxes += [origin[0], origin[1], origin[0], origin[1]]
        return boxes, 1 / (1 + np.exp(-logits[rows, cols]))

    def _grid_hits(self, gray: np.ndarray, scales: list[float]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The presence grid of whole pyramid levels: hit boxes and scores per level."""
        boxes, scores = [], []
        for scale in scales:
            found = self._level_hits(*self._level_grid(_resize(gray, scale)), scale)
            if found is not None:
                boxes.append(found[0])
                scores.append(found[1])
        return boxes, scores

    def _level_grid(self, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The detection network's grid over a whole level: (rows, cols) presence logits and
        (rows, cols, 4) plate boxes. A level of more than `MAX_LEVEL_PIXELS` runs in tiles, each with
        `TILE_CONTEXT` pixels of the level around its windows, so memory stays bounded (a 4K frame's
        finest level is 21 M pixels, about 1.5 GB of activations) and seams see what the whole level
        would."""
        h, w = level.shape
        if h * w <= MAX_LEVEL_PIXELS:
            return self._network_grid(level)
        rows, cols = grid_shape(h, w)
        side = math.isqrt(MAX_LEVEL_PIXELS)  # tiles of about side x side pixels, context included
        tile_rows = max(1, (side - 2 * TILE_CONTEXT - WINDOW_H) // 8 + 1)
        tile_cols = max(1, (side - 2 * TILE_CONTEXT - WINDOW_W) // 8 + 1)
        logits, boxes = np.zeros((rows, cols), np.float32), np.zeros((rows, cols, 4), np.float32)
        for r0 in range(0, rows, tile_rows):
            for c0 in range(0, cols, tile_cols):
                r1, c1 = min(rows, r0 + tile_rows), min(cols, c0 + tile_cols)
                # the tile's pixels: its windows plus context, from a multiple of 8 so its grid is the level's
                y0, x0 = max(0, 8 * r0 - TILE_CONTEXT), max(0, 8 * c0 - TILE_CONTEXT)
                y1 = min(h, 8 * (r1 - 1) + WINDOW_H + TILE_CONTEXT)
                x1 = min(w, 8 * (c1 - 1) + WINDOW_W + TILE_CONTEXT)
                tile_logits, tile_boxes = self._network_grid(level[y0:y1, x0:x1])
                cells = np.s_[r0 - y0 // 8: r1 - y0 // 8, c0 - x0 // 8: c1 - x0 // 8]
                logits[r0:r1, c0:c1], boxes[r0:r1, c0:c1] = tile_logits[cells], tile_boxes[cells]
        return logits, boxes

    def _region_hits(self, gray: np.ndarray, regions: list[Region], scales: list[float]
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The presence grid inside regions only: each level's `level_crops`, resized and run on
        pages (`_paged_grids`)."""
        return self._regions_hits(gray, [(regions, scales)])[0]

    def _regions_hits(self, gray: np.ndarray, searches: list[tuple[list[Region], list[float]]]
                      ) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
        """`_region_hits` of several (regions, scales) searches at once, their crops sharing pages
        (a page costs a network call and is 1,024 px wide however little is on it), the hits of each
        search apart (they are grouped apart)."""
        h, w = gray.shape[:2]
        crops = []  # (resized crop, its scale, where it starts in the image, which search)
        for n, (regions, scales) in enumerate(searches):
            for scale in scales:
                for x0, y0, x1, y1 in level_crops(regions, scale, h, w):
                    level = _resize(gray[y0:y1, x0:x1], scale)
                    if level.shape[0] >= WINDOW_H and level.shape[1] >= WINDOW_W:
                        crops.append((level, scale, (float(x0), float(y0)), n))
        hits: list[tuple[list[np.ndarray], list[np.ndarray]]] = [([], []) for _ in searches]
        grids = self._paged_grids([crop for crop, _, _, _ in crops])
        for (logits, box_frac), (_, scale, origin, n) in zip(grids, crops, strict=True):
            found = self._level_hits(logits, box_frac, scale, origin)
            if found is not None:
                hits[n][0].append(found[0])
                hits[n][1].append(found[1])
        return hits

    def _network_grid(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One detection-network call on a grayscale image: its grid's presence logits and boxes."""
        out = self.networks.detection(image[None, :, :, None].astype(np.float32))
        return out["presence"][0, :, :, 0], out["box"][0]

    def _paged_grids(self, crops: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The detection network's grid over each crop, (rows, cols) presence logits and (rows, cols, 4)
        plate boxes: the crops are packed side by side on a few pages (`pack_crops`), one network call
        per page, and each crop's cells cut out again. A crop too large for a page runs on its own."""
        grids: list[tuple[np.ndarray, np.ndarray] | None] = [
            None if fits_page(*crop.shape) else self._level_grid(crop) for crop in crops]
        on_pages = [i for i, grid in enumerate(grids) if grid is None]
        for page, placed in pack_crops([crops[i].shape[:2] for i in on_pages]):
            canvas = np.full(page, 127, np.uint8)
            placed = [(on_pages[n], yx) for n, yx in placed]
            for index, (y, x) in placed:  # the crop, then its gap right and below, edge pixels repeated
                ch, cw = crops[index].shape
                canvas[y: y + ch + PAGE_GAP, x: x + cw + PAGE_GAP] = cv2.copyMakeBorder(
                    crops[index], 0, PAGE_GAP, 0, PAGE_GAP, cv2.BORDER_REPLICATE)
            logits, box_frac = self._network_grid(canvas)
            for index, (y, x) in placed:
                rows, cols = grid_shape(*crops[index].shape)
                cells = np.s_[y // 8: y // 8 + rows, x // 8: x // 8 + cols]
                grids[index] = (logits[cells], box_frac[cells])
        return [grid for grid in grids if grid is not None]  # every crop's, on a page or alone

    def load_prefilter(self, prefilter: Prefilter | None) -> None:
        """Load the pre-filter plans will name (a camera's `cascade.prefilter`) now, so that a bad
        model folder fails when the camera starts, not at its first frame."""
        self._active_prefilter(self._search_config(SearchPlan(prefilter=prefilter)))

    @property
    def prefilter(self) -> HogPrefilter | PlateProposer | None:
        """The pre-filter of the current config (None with `prefilter: none`)."""
        return self._active_prefilter()

    def _active_prefilter(self, config: DetectorConfig | None = None) -> HogPrefilter | PlateProposer | None:
        """The pre-filter `config` (default: the current config) asks for, loaded on first use and
        kept (a video's plans name their own; the bench changes the config)."""
        config = config or self.config
        if config.prefilter == "none":
            return None
        key = (config.prefilter, config.prefilter_folder, config.min_plate_width, config.max_plate_width,
               config.threads)
        if key not in self._prefilters:
            if config.prefilter == "hog":
                from cascade.hog import HogPrefilter

                self._prefilters[key] = HogPrefilter.load(config.prefilter_folder, self._base_dir)
            else:
                from cascade.proposer import PlateProposer

                self._prefilters[key] = PlateProposer.load(
                    config.prefilter_folder, self._base_dir, min_plate_width=config.min_plate_width,
                    max_plate_width=config.max_plate_width, threads=config.threads)
        return self._prefilters[key]

    # -- stage 3-4: group, verify and read -----------------------------------------------------------
    def detect(self, image: np.ndarray, plan: SearchPlan | None = None) -> list[Detection]:
        """Plates in a BGR or grayscale uint8 image, most confident first.

        `plan` (`cascade.plan.SearchPlan`) says where the network looks; None is a still image's
        plan: the HOG pre-filter's regions and the coarse levels whole (or the whole pyramid with
        `prefilter: none`). A video's cascade (`cascade.FrameCascade`) passes a plan per frame.
        """
        if image is None or image.ndim not in (2, 3) or image.dtype != np.uint8:
            raise ValueError("expected an 8-bit grayscale or BGR image")
        if min(image.shape[:2]) < MIN_IMAGE_SIDE:  # a stray thumbnail in a folder is not an error
            return []
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        plan = plan or still_plan()
        config = self._search_config(plan)
        plan = self._resolved(plan, gray, config)
        self.last_regions = len(plan.regions)
        if plan.empty:
            return []
        scales = pyramid_scales(*gray.shape[:2], config)
        if plan.full_pyramid:
            proposals = self._proposals(self._grid_hits(gray, scales))
        else:
            # The levels for wide plates are small images, so scanning them whole is cheap, and it finds
            # the large tilted plates the HOG template misses. Regions still run at every level: a
            # crop's own grid phase finds plates the whole level's grid misses. The two sets of hits
            # are grouped apart, or a loose box from a coarse level chains into a plate's group and
            # drags its averaged box off the plate (seen on `eu`); a whole-level proposal is read
            # only where the regions proposed nothing (reading dominates the time of a plate).
            whole = whole_scan_scales(scales, config.full_scan_width)
            if WHOLE_FRAME in plan.coarse or not plan.coarse:
                found = self._region_hits(gray, list(plan.regions), scales) if plan.regions else ([], [])
                coarse = self._grid_hits(gray, whole) if plan.coarse else ([], [])
            else:  # coarse levels inside the plan's areas only (a video frame's moving parts)
                band = (config.full_scan_width, config.max_plate_width)
                found, coarse = self._regions_hits(gray, [
                    (list(plan.regions), scales),
                    ([Region(area, band, 0.0, "coarse") for area in plan.coarse], whole)])
            proposals = self._proposals(found)
            proposals += _unproposed(self._proposals(coarse), proposals)
        return self.read([b for b, _ in proposals], gray, [s for _, s in proposals], plan.read_hints)

    def _search_config(self, plan: SearchPlan) -> DetectorConfig:
        """The settings `plan` is searched with: the detector's, with the plan's pre-filter if it
        names one."""
        if plan.prefilter is None or (plan.prefilter.kind, plan.prefilter.model) == (
                self.config.prefilter, self.config.prefilter_model):
            return self.config
        return self.config.model_copy(update={"prefilter": plan.prefilter.kind,
                                              "prefilter_model": plan.prefilter.model})

    def _resolved(self, plan: SearchPlan, gray: np.ndarray, config: DetectorConfig) -> SearchPlan:
        """`plan` with its `propose_in` areas turned into regions: the pre-filter's proposals there,
        or, with no pre-filter, the areas themselves at every plate width (the whole frame: the whole
        pyramid)."""
        if plan.full_pyramid or not plan.propose_in:
            return plan
        prefilter = self._active_prefilter(config)
        if prefilter is not None:
            threshold = config.prefilter_threshold if plan.propose_threshold is None \
                else plan.propose_threshold
            proposed = tuple(not_covered(prefilter.regions_in(gray, plan.propose_in, threshold),
                                         plan.regions))
        elif WHOLE_FRAME in plan.propose_in:
            return replace(plan, full_pyramid=True)
        else:
            widths = (config.min_plate_width, config.max_plate_width)
            proposed = tuple(Region(area, widths, 0.0, "area") for area in plan.propose_in)
        return replace(plan, regions=plan.regions + proposed, propose_in=())

    def _proposals(self, hits: tuple[list[np.ndarray], list[np.ndarray]]) -> list[_Proposal]:
        """One proposal per group of overlapping hits (`group_hits`): the score-weighted mean plate
        box and the group's best score."""
        found = _top_hits(*hits)
        if len(found.scores) == 0:
            return []
        groups = group_hits(found.boxes, found.scores, self.config.group_iou)
        boxes, scores = found.boxes, found.scores
        return [(tuple(np.average(boxes[g], axis=0, weights=scores[g])), float(scores[g].max()))
                for g in groups]

    def read(self, boxes: list[tuple[float, float, float, float]], gray: np.ndarray,
             scores: list[float] | None = None,
             hints: tuple[tuple[tuple[float, float, float, float], str], ...] = ()) -> list[Detection]:
        """Re-read plate boxes (x0, y0, x1, y1) on centred crops; returns verified detections.

        hints: (plate box, read mode) pairs (`SearchPlan.read_hints`): the verified plate that best
        overlaps a hint's box (IoU at least `HINT_IOU`) is read as the hint says, in one view
        (`READ_ONE`) or not at all (`READ_NONE`: a detection with its box and presence, no text, no
        candidates, no posteriors); every other plate is read in full."""
        if not boxes:
            return []
        presence, refined_boxes, first_reads = self._verify(boxes, gray)
        kept = [i for i, box in enumerate(refined_boxes)
                if presence[i] >= self.config.verify_threshold and box.w > 1 and box.h > 1]
        modes = _hinted_modes(kept, refined_boxes, hints)
        full = [i for i in kept if modes.get(i, READ_FULL) == READ_FULL]
        one = [i for i in kept if modes.get(i) == READ_ONE]
        reads, as_seen = self._full_reads(full, refined_boxes, first_reads, gray)
        one_reads, one_as_seen = self._one_view_reads(one, refined_boxes, first_reads, gray)
        reads.update(one_reads)
        as_seen.update(one_as_seen)
        detections = []
        for i in kept:
            score = float(presence[i]) if scores is None else float(max(scores[i], presence[i]))
            if modes.get(i) == READ_NONE:  # followed, not read: the tracker fuses nothing from it
                detections.append(Detection(box=refined_boxes[i], presence=score, text="", confidence=0.0))
                continue
            reading = self._decode(reads[i])
            if i in as_seen and (reading is None or reading[1] < self.config.inverted_min_confidence):
                # light print on a dark ground that reads only so-so inverted is more often a
                # dealer frame or a strip than a dark plate: keep the plate's reading as seen
                reads[i] = as_seen[i]
                reading = self._decode(reads[i])
            if reading is None:
                continue
            text, confidence, candidates, pattern, free_confidence = reading
            if free_confidence < self.config.min_confidence:  # a format never deletes a plate
                continue
            char_probs = reads[i][0] if len(reads[i]) == 1 else reads[i]
            detections.append(Detection(box=refined_boxes[i], presence=score, text=text,
                                        confidence=confidence, candidates=candidates,
                                        char_probs=char_probs, pattern=pattern))
        return self._suppress_duplicates(detections)

    def _full_reads(self, kept: list[int], refined_boxes: list[Box], first_reads: np.ndarray,
                    gray: np.ndarray) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        """The reads (K, T, C) of the `kept` plates read in full, and of those read inverted, their
        reads as seen."""
        scales = self.config.read_scales
        as_seen: dict[int, np.ndarray] = {}  # plates read inverted: their reads as seen
        if kept and self.readers:  # each plate reader reads the refined box at each scale
            factors = scales or [1.0]
            views = [_scaled(refined_boxes[i], f) for i in kept for f in factors]
            crops_read = self._reader_reads(views, gray)  # (readers, views, T, C)
            per_plate = crops_read.reshape(len(self.readers), len(kept), len(factors), *crops_read.shape[2:])
            reads = {i: per_plate[:, n].reshape(-1, *crops_read.shape[2:]) for n, i in enumerate(kept)}
            if self.config.read_inverted:  # light text on a dark plate reads as a plate once inverted
                inverted = self._reader_reads(views, gray, invert=True).reshape(per_plate.shape)
                for n, i in enumerate(kept):
                    other = inverted[:, n].reshape(-1, *crops_read.shape[2:])
                    if _best_path_log_probability(other) > _best_path_log_probability(reads[i]):
                        as_seen[i], reads[i] = reads[i], other
        else:  # the window network's read, and its second pass on the refined box at each scale
            reads = {i: first_reads[i][None] for i in kept}
            if kept and scales:
                views = [_scaled(refined_boxes[i], f) for i in kept for f in scales]
                _, _, second_reads = self._read_windows(views, gray)
                for n, i in enumerate(kept):
                    more = second_reads[n * len(scales): (n + 1) * len(scales)]
                    reads[i] = np.concatenate((reads[i], more))
        return reads, as_seen

    def _one_view_reads(self, kept: list[int], refined_boxes: list[Box], first_reads: np.ndarray,
                        gray: np.ndarray) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        """One view of each of the `kept` plates: the refined box at scale 1 by each plate reader (the
        window network's own read without readers), as seen; inverted as well only where that read
        is unsure (`ONE_VIEW_INVERT_BELOW`, a light-on-dark plate), keeping the surer polarity."""
        as_seen: dict[int, np.ndarray] = {}
        if not kept or not self.readers:
            return {i: first_reads[i][None] for i in kept}, as_seen
        views = [_scaled(refined_boxes[i], 1.0) for i in kept]
        crops_read = self._reader_reads(views, gray)  # (readers, views, T, C)
        reads = {i: crops_read[:, n] for n, i in enumerate(kept)}
        if self.config.read_inverted:
            unsure = [(n, i) for n, i in enumerate(kept)
                      if _best_path_log_probability(reads[i]) < ONE_VIEW_INVERT_BELOW]
            if unsure:
                inverted = self._reader_reads([views[n] for n, _ in unsure], gray, invert=True)
                for m, (_, i) in enumerate(unsure):
                    if _best_path_log_probability(inverted[:, m]) > _best_path_log_probability(reads[i]):
                        as_seen[i], reads[i] = reads[i], inverted[:, m]
        return reads, as_seen

    def _verify(self, boxes: list[tuple[float, float, float, float]], gray: np.ndarray
                ) -> tuple[np.ndarray, list[Box], np.ndarray]:
        """`_read_windows` on the proposed `boxes`, then again on the refined box of each plate it
        rejected whose refined box moved off the proposal (IoU under `REVERIFY_IOU`), keeping the
        surer pass. A group's averaged box can be loose (hits of several levels): the plate then fills
        under 60% of the centred window, which the presence rule calls no plate, while the box output
        already points at the plate itself."""
        presence, refined, reads = self._read_windows(boxes, gray)
        boxes = list(boxes)  # each plate's latest verified-on box
        for _ in range(REVERIFY_ROUNDS):
            again = [i for i, (box, (x0, y0, x1, y1)) in enumerate(zip(refined, boxes, strict=True))
                     if presence[i] < self.config.verify_threshold and box.w > 1 and box.h > 1
                     and box.iou(Box(x0, y0, x1 - x0, y1 - y0)) < REVERIFY_IOU]
            if not again:
                break
            for i in again:
                boxes[i] = (refined[i].x, refined[i].y, refined[i].x2, refined[i].y2)
            more_presence, more_refined, more_reads = self._read_windows([boxes[i] for i in again], gray)
            for n, i in enumerate(again):
                if more_presence[n] > presence[i]:
                    presence[i], refined[i], reads[i] = more_presence[n], more_refined[n], more_reads[n]
        return presence, refined, reads

    def _read_windows(self, boxes: list[tuple[float, float, float, float]], gray: np.ndarray
                      ) -> tuple[np.ndarray, list[Box], np.ndarray]:
        """The window model on crops centred on `boxes`: presence scores, refined plate boxes in image
        pixels, and (N, T, C) float32 CTC posteriors."""
        windows, frames = zip(*(read_crop_window(gray, b) for b in boxes), strict=True)
        batch = np.stack(windows)[..., None].astype(np.float32)
        out = self.networks.window(batch)
        presence = 1 / (1 + np.exp(-out["presence"][:, 0]))
        box_frac = out["box"]
        probs = _softmax(out["text"])
        refined = []
        for (left, top, sx, sy), frac in zip(frames, box_frac, strict=True):
            fx0, fy0, fx1, fy1 = frac * [WINDOW_W, WINDOW_H, WINDOW_W, WINDOW_H]
            refined.append(Box(left + fx0 / sx, top + fy0 / sy, (fx1 - fx0) / sx, (fy1 - fy0) / sy))
        return presence, refined, probs

    def _reader_reads(self, boxes: list[tuple[float, float, float, float]], gray: np.ndarray,
                      invert: bool = False) -> np.ndarray:
        """Each plate reader on `reader_crop`s of `boxes` (inverted: 255 - crop): (readers, N, T, C)
        float32 CTC posteriors."""
        batch = np.stack([reader_crop(gray, b)[0] for b in boxes])[..., None].astype(np.float32)
        if invert:
            batch = 255.0 - batch
        return np.stack([_softmax(reader(batch)["text"]) for reader in self.readers])

    def _decode(self, reads: np.ndarray
                ) -> tuple[str, float, tuple[Candidate, ...], str | None, float] | None:
        """Text, probability, candidates, pattern name (or country code) and the free reading's
        probability, from K reads (K, T, C) of one plate."""
        proposed = free_texts(reads, self.config.top_n, self.format_prior)
        fits: dict[str, str] = {}  # text -> name of the pattern whose beam search found it
        for probs in reads:
            for pattern in self.patterns:
                fit = pattern_beam_search(probs, pattern)
                if fit:
                    fits.setdefault(fit[0], pattern.name)
        texts = list(dict.fromkeys([*proposed, *fits]))
        if not texts:
            return None
        log_likelihood = views_log_likelihoods(texts, reads)
        order = np.argsort(-log_likelihood, kind="stable")
        ranked = [(texts[i], math.exp(log_likelihood[i])) for i in order]
        free_confidence = ranked[0][1]
        text, confidence = ranked[0]
        pattern_name = None
        fitting = [(t, p) for t, p in ranked if t in fits]
        country = self.country_prior.choose(
            [r for r in ranked if r[0] in proposed],
            lambda candidates: views_log_likelihoods(candidates, reads)) if self.country_prior else None
        if country is not None:
            # the reader's probability of the shapes it saw; the format only names the look-alikes
            own = math.exp(float(views_log_likelihoods([country.text], reads)[0]))
            text, pattern_name = country.text, country.country
            confidence = max(own, dict(ranked)[country.source])
            ranked = [(text, confidence)] + [r for r in ranked if r[0] != text]
        elif fitting and fitting[0][1] >= self.config.pattern_min_ratio * confidence:
            text, confidence = fitting[0]
            pattern_name = fits[text]
            ranked = [(text, confidence)] + [r for r in ranked if r[0] != text]
        elif self.format_prior:
            ranked = self.format_prior.rank([texts[i] for i in order], log_likelihood[order])
            text, confidence = ranked[0]
        calibrated = self.calibration
        candidates = tuple(Candidate(t, round(calibrated(p), 6)) for t, p in ranked[: self.config.top_n])
        return text, calibrated(confidence), candidates, pattern_name, float(free_confidence)

    def _suppress_duplicates(self, detections: list[Detection]) -> list[Detection]:
        """Two groups can settle on one plate after refinement: keep the more confident."""
        detections.sort(key=lambda d: -(d.presence * d.confidence))
        kept: list[Detection] = []
        for det in detections:
            if all(det.box.iou(k.box) < DUPLICATE_IOU for k in kept):
                kept.append(det)
        return kept
