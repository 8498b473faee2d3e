"""HOG + linear SVM pre-filter: cheap plate proposals, so the CNN looks at a few regions, not a pyramid.

The cascade's proposal stage (training: cascade/train_hog.py).

1. OpenCV's `HOGDescriptor.detect` slides a small window (64x24: a plate plus some context) over
   each level of an image pyramid (step `scale_step`, 1.3 for hog-v1) on an 8 pixel grid and scores
   every position with a linear SVM: one dot product per window.
2. Every window scoring above `threshold` is a hit. It says "a plate is about here, between
   `plate_fill[0]` and `plate_fill[1]` of my width wide" (positives were framed with the plate at
   60-85% of the window; the stored range is what calibration measured, see cascade/train_hog.py).
3. Each hit is padded by `pad` window widths on every side, because the CNN needs context around the
   plate: its 128x64 window must hold the plate at 60-80% of its width, and it scans on an 8 pixel
   grid. Overlapping padded boxes are merged where the merged region costs the CNN no more than its
   parts (see `merge_boxes`) and clipped to the image. A region keeps the range of plate widths its
   hits imply.

The model is a folder holding `hog.yml` (OpenCV's own `HOGDescriptor.save` file: window, cell and
block geometry and the SVM detector vector, weights followed by -rho) and `hog.json` (format tag,
the framing and scale step used in training, and how it was made and measured).

    prefilter = HogPrefilter.load("models/hog-v1")
    regions = prefilter.regions(gray)   # cascade.plan.Region(box, plate_widths, score), best first
    boxes = prefilter.propose(gray)     # the same regions as (x0, y0, x1, y1) tuples
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cascade.models import ModelError, resolve_model_dir
from cascade.plan import Region, regions_in_areas

__all__ = ["HOG_FORMAT", "HogParams", "HogPrefilter", "Region", "merge_boxes"]

HOG_FORMAT = "anprd-hog-prefilter/1"
DEFAULT_PAD = 0.15  # window widths added on each side of a hit (measured: 0.15-0.3 lose no plate)
MAX_HITS = 500  # best hits kept per image before merging (bounds the cost on pathological images)
MAX_LEVELS = 64  # HOG pyramid levels at most (OpenCV's default)


@dataclass(frozen=True)
class HogParams:
    """The HOG geometry in pixels; one definition for training and inference."""

    window: tuple[int, int] = (64, 24)  # width, height
    block: tuple[int, int] = (16, 16)
    block_stride: tuple[int, int] = (8, 8)
    cell: tuple[int, int] = (8, 8)
    nbins: int = 9

    def build(self) -> cv2.HOGDescriptor:
        """A fresh descriptor with this geometry (no SVM detector set)."""
        for axis in (0, 1):
            size, block, stride = self.window[axis], self.block[axis], self.block_stride[axis]
            if size < block or (size - block) % stride:
                raise ValueError(f"HOG window {self.window} does not tile with block {self.block} and "
                                 f"stride {self.block_stride} along {'xy'[axis]}")
        return cv2.HOGDescriptor(self.window, self.block, self.block_stride, self.cell, self.nbins)

    @property
    def scan_padding(self) -> tuple[int, int]:
        """Pixels (x, y) of mirrored border added around the image before the scan (a quarter window,
        in whole block steps), so that windows around plates at the edge of the frame are scored."""
        return tuple(math.ceil(size / 4 / stride) * stride  # type: ignore[return-value]
                     for size, stride in zip(self.window, self.block_stride, strict=True))

    def to_json(self) -> dict[str, object]:
        return {"window": list(self.window), "block": list(self.block),
                "block_stride": list(self.block_stride), "cell": list(self.cell), "nbins": self.nbins}


def merge_boxes(boxes: np.ndarray, widths: np.ndarray | None = None) -> list[np.ndarray]:
    """Index groups of boxes (N x 4, x0 y0 x1 y1); each group stands for the union box of its members.

    The CNN's cost for a region is about its area over the square of the narrowest plate it must
    find (that plate sets the finest pyramid level, which dominates). Greedily, the two overlapping
    boxes whose merge saves the most are merged, as long as the merged region costs no more than the
    two apart; so the hits on one plate become one region, while a small hit is not swallowed by a
    large region whose whole area would then be scanned at the small hit's fine level. `widths` are
    the narrowest plate widths per box (default: all equal, so the cost is the area).
    """
    n = len(boxes)
    ext = boxes.astype(np.float64).copy()
    narrow = np.ones(n) if widths is None else np.asarray(widths, np.float64).copy()
    groups: list[list[int]] = [[i] for i in range(n)]
    if n < 2:
        return [np.array(g) for g in groups]

    def costs(box: np.ndarray, width: np.ndarray | float) -> np.ndarray:
        return (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1]) / np.square(width)

    def gains(i: int) -> np.ndarray:  # cost apart minus cost merged; -inf where no merge is allowed
        union = np.column_stack([np.minimum(ext[:, 0], ext[i, 0]), np.minimum(ext[:, 1], ext[i, 1]),
                                 np.maximum(ext[:, 2], ext[i, 2]), np.maximum(ext[:, 3], ext[i, 3])])
        overlap = ((np.minimum(ext[:, 2], ext[i, 2]) > np.maximum(ext[:, 0], ext[i, 0]))
                   & (np.minimum(ext[:, 3], ext[i, 3]) > np.maximum(ext[:, 1], ext[i, 1])))
        gain = cost + cost[i] - costs(union, np.minimum(narrow, narrow[i]))
        gain[~overlap | ~alive] = -np.inf
        gain[i] = -np.inf
        return gain

    cost = costs(ext, narrow)
    alive = np.ones(n, bool)
    table = np.stack([gains(i) for i in range(n)])
    while True:
        i, j = divmod(int(np.argmax(table)), n)
        if table[i, j] < 0:
            break
        ext[i] = [min(ext[i, 0], ext[j, 0]), min(ext[i, 1], ext[j, 1]), max(ext[i, 2], ext[j, 2]),
                  max(ext[i, 3], ext[j, 3])]
        narrow[i] = min(narrow[i], narrow[j])
        cost[i] = costs(ext[i], narrow[i])
        groups[i] += groups[j]
        alive[j] = False
        table[j, :] = table[:, j] = -np.inf
        table[i, :] = table[:, i] = gains(i)
    return [np.array(sorted(groups[i])) for i in np.flatnonzero(alive)]


class HogPrefilter:
    """Proposes plate regions with a HOG + linear SVM window classifier.

    Parameters
    ----------
    model_dir:
        Folder with `hog.yml` and `hog.json` (see the module docstring).
    threshold:
        SVM margin a window needs to be a hit. 0 is the operating point the model was calibrated
        to; lower values find more plates and propose more (and larger) regions.
    pad:
        Window widths added on every side of a hit before merging.
    scale_step:
        Pyramid step of the HOG scan; None uses the step the model was calibrated with.
    """

    def __init__(self, model_dir: Path, threshold: float = 0.0, pad: float = DEFAULT_PAD,
                 scale_step: float | None = None) -> None:
        self.model_dir = Path(model_dir)
        meta_path, yml_path = self.model_dir / "hog.json", self.model_dir / "hog.yml"
        try:
            self.meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{meta_path}: unreadable HOG pre-filter metadata ({exc})") from None
        if not isinstance(self.meta, dict) or self.meta.get("format") != HOG_FORMAT:
            raise ModelError(f"{meta_path}: not an anprd HOG pre-filter of a known format")
        try:
            self.params = HogParams(**{k: tuple(v) if isinstance(v, list) else v
                                       for k, v in self.meta["hog"].items()})
            fill = self.meta["plate_fill"]
            self.plate_fill = (float(fill[0]), float(fill[1]))
            self.scale_step = float(scale_step or self.meta["scale_step"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"{meta_path}: incomplete HOG pre-filter metadata ({exc!r})") from None
        if not yml_path.is_file():
            raise ModelError(f"{yml_path}: HOG pre-filter detector missing")
        self.hog = cv2.HOGDescriptor()
        try:
            loaded = self.hog.load(str(yml_path))
        except cv2.error:
            loaded = False
        detector = np.asarray(self.hog.svmDetector).ravel() if loaded else np.zeros(0)
        if (not loaded or tuple(self.hog.winSize) != self.params.window
                or detector.size != self.hog.getDescriptorSize() + 1 or not np.isfinite(detector).all()):
            raise ModelError(f"{yml_path}: not a HOG detector matching {meta_path.name} "
                             f"(window {self.params.window})")
        self.threshold = threshold
        self.pad = pad

    @classmethod
    def load(cls, model: str | Path, base_dir: Path | None = None, threshold: float = 0.0,
             pad: float = DEFAULT_PAD) -> HogPrefilter:
        """Find the model folder like the CNN's (`resolve_model_dir`, looking for hog.json) and load it."""
        return cls(resolve_model_dir(str(model), base_dir, marker="hog.json"), threshold, pad)

    def windows(self, gray: np.ndarray, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw hits: (N x 4 boxes x0 y0 x1 y1 of the HOG windows, N SVM margins), best first."""
        # The pyramid is walked here, one `detect` per level, rather than by detectMultiScale: with
        # more than one OpenCV thread (and with its own padding) detectMultiScale returned different
        # windows from run to run on the same image (measured with OpenCV 5.0).
        px, py = self.params.scan_padding
        padded = cv2.copyMakeBorder(gray, py, py, px, px, cv2.BORDER_REFLECT_101)
        hit_threshold = self.threshold if threshold is None else threshold
        win_w, win_h = self.params.window
        h, w = padded.shape
        found, weights = [], []
        scale = 1.0
        for _ in range(MAX_LEVELS):
            size = (round(w / scale), round(h / scale))
            if size[0] < win_w or size[1] < win_h:
                break
            level = padded if scale == 1.0 else cv2.resize(padded, size, interpolation=cv2.INTER_LINEAR)
            points, margins = self.hog.detect(level, hitThreshold=hit_threshold,
                                              winStride=self.params.block_stride, padding=(0, 0))
            if len(points):
                xy = np.asarray(points, np.float64).reshape(-1, 2) * scale
                found.append(np.column_stack([xy, np.full((len(xy), 2), [win_w * scale, win_h * scale])]))
                weights.append(np.asarray(margins, np.float64).ravel())
            scale *= self.scale_step
        if not found:
            return np.zeros((0, 4)), np.zeros((0,))
        rects = np.concatenate(found) - [px, py, 0, 0]
        scores = np.concatenate(weights)
        order = np.lexsort((rects[:, 0], rects[:, 1], rects[:, 2], -scores))
        rects, scores = rects[order], scores[order]
        return np.column_stack([rects[:, :2], rects[:, :2] + rects[:, 2:]]), scores

    def regions(self, gray: np.ndarray, threshold: float | None = None) -> list[Region]:
        """Padded, merged, clipped proposals in a grayscale uint8 image, best first."""
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError("expected an 8-bit grayscale image")
        boxes, scores = self.windows(gray, threshold)
        if len(boxes) == 0:
            return []
        boxes, scores = boxes[:MAX_HITS], scores[:MAX_HITS]  # windows() sorts them best first
        width = boxes[:, 2] - boxes[:, 0]
        padded = boxes + np.outer(width * self.pad, [-1, -1, 1, 1])
        h, w = gray.shape
        lo, hi = self.plate_fill
        regions = []
        for group in merge_boxes(padded, width):
            box = (max(0.0, float(padded[group, 0].min())), max(0.0, float(padded[group, 1].min())),
                   min(float(w), float(padded[group, 2].max())), min(float(h), float(padded[group, 3].max())))
            widths = (float(width[group].min() * lo), float(width[group].max() * hi))
            regions.append(Region(box, widths, float(scores[group].max())))
        return sorted(regions, key=lambda r: -r.score)

    def regions_in(self, gray: np.ndarray, areas: tuple[tuple[float, float, float, float], ...],
                   threshold: float | None = None) -> list[Region]:
        """`regions` inside `areas` (x0, y0, x1, y1; `cascade.plan.WHOLE_FRAME` for all of it), in
        `gray`'s pixels, best first. Each area is scanned on its own crop, widened to hold a few HOG
        windows; a plate straddling two areas is found in either, as the regions overlap."""
        win_w, win_h = self.params.window
        # at least two windows each way, or a small moving part (a plate's own edges) gives no window
        return regions_in_areas(gray, areas, lambda crop, _edges: self.regions(crop, threshold),
                                at_least=(2 * win_w, 2 * win_h), smallest=(win_w, win_h))

    def propose(self, gray: np.ndarray, threshold: float | None = None
                ) -> list[tuple[float, float, float, float]]:
        """Proposed regions (x0, y0, x1, y1) in image pixels, best first."""
        return [r.box for r in self.regions(gray, threshold)]
