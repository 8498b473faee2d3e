"""Plate proposals from a small learned network: where the detection network should look in a new frame.

The cascade's learned proposal stage, in place of the HOG pre-filter (`cascade/hog.py`): video's
by default (`cascade.prefilter: proposer`), photos' with `detector.prefilter: proposer`. Training:
`python -m cascade.train_proposer`.

1. The frame is resized to a few octave levels. The first brings the narrowest plate searched for
   to `SEARCH_FILL[0]` of the network's 64x32 window, each next one is half as large, down to the
   widest plate; at half the detection network's resolution this is a few per cent of its pyramid.
2. The network scores every 8-pixel step of each level (and `EDGE_CELLS` steps of repeated border
   past the frame's edges, so that a plate at an edge is centred in some window): "a plate is
   centred in this window, 32-85% of its width" (`proposal_label`), and predicts that plate's
   centre and size (`encode_plate`).
   One level covers more than an octave of plate widths, so an octave pyramid leaves no width
   between levels.
3. Every window scoring above the threshold (calibrated in training so that 99% of generated
   scenes' plates are still searched) becomes a search: its predicted plate grown by the centre's
   error margin, at the widths within the width's error margin (both measured in training).
   Overlapping searches are merged where the merged region costs the detection network no more
   than its parts (`cascade.hog.merge_boxes`); a region keeps the widths of its searches, so the
   detection network scans it at those pyramid levels only.

The model folder holds `proposer.onnx` (run by ONNX Runtime: no TensorFlow at run time),
`proposer.weights.h5` (the Keras weights it was exported from) and `proposer.json` (format tag, window,
fill band, threshold, the training command and its measures).

    proposer = PlateProposer.load("models/proposer-v1", min_plate_width=60, max_plate_width=640)
    regions = proposer.regions(gray)   # cascade.plan.Region(box, plate_widths, score), best first
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from cascade.hog import merge_boxes
from cascade.models import ModelError, resolve_model_dir
from cascade.plan import ALL_EDGES, FrameEdges, Region, regions_in_areas

__all__ = ["PROPOSAL_FILL", "PROPOSER_FORMAT", "WINDOW", "PlateProposer", "proposal_label"]

PROPOSER_FORMAT = "anprd-proposer/1"
WINDOW = (64, 32)  # width, height: the detection network's 128x64 window at half resolution
PROPOSAL_FILL = (0.32, 0.85)  # plate width / window width of a proposal (training labels)
PROPOSAL_HEIGHT_FILL = 0.9  # the tallest plate / window height
CENTRE_BOX = 0.25  # a proposal's plate centre lies within this fraction of the window of its centre
SEARCH_FILL = (0.4, 0.8)  # the band each level is relied on for: inside the trained band, with margin
EDGE_CELLS = 2  # cells of repeated border past a frame's edges: windows centred on a plate at the edge
MAX_HITS = 300  # best windows kept per image before merging


def proposal_label(box: tuple[float, float, float, float], window_w: float = 128,
                   window_h: float = 64) -> bool:
    """True when a plate box (x0, y0, x1, y1, window pixels) makes a proposal window: its centre within
    `CENTRE_BOX` of the window's size of the window's centre, narrower than 85% of the width and
    lower than 90% of the height, and wider than 32% of the width or higher than 32% of the height."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if w <= 0 or h <= 0:
        return False
    centred = (abs((x0 + x1) / 2 - window_w / 2) <= CENTRE_BOX * window_w
               and abs((y0 + y1) / 2 - window_h / 2) <= CENTRE_BOX * window_h)
    fits = w < PROPOSAL_FILL[1] * window_w and h < PROPOSAL_HEIGHT_FILL * window_h
    big_enough = w > PROPOSAL_FILL[0] * window_w or h > PROPOSAL_FILL[0] * window_h
    return bool(centred and fits and big_enough)


def encode_plate(box: tuple[float, float, float, float], window_w: float = 128, window_h: float = 64
                 ) -> tuple[float, float, float, float]:
    """A plate box (x0, y0, x1, y1, window pixels) as the network regresses it: its centre's offset
    from the window's centre in window widths and heights, and the log of its width and height in
    window widths and heights."""
    x0, y0, x1, y1 = box
    return ((x0 + x1) / 2 / window_w - 0.5, (y0 + y1) / 2 / window_h - 0.5,
            math.log(max(x1 - x0, 1e-3) / window_w), math.log(max(y1 - y0, 1e-3) / window_h))


class PlateProposer:
    """Proposes plate regions with the proposal network.

    Parameters
    ----------
    model_dir:
        Folder with `proposer.onnx` and `proposer.json` (see the module docstring).
    threshold:
        Score a window needs to be a hit, over the operating point calibrated in training
        (proposer.json's `threshold`, a logit): 0 is that point, lower finds more plates and
        proposes more regions (as `cascade.hog.HogPrefilter`'s threshold).
    min_plate_width, max_plate_width:
        The plate widths searched for, in frame pixels (the detector's).
    threads:
        ONNX Runtime intra-op threads (0: every core).
    """

    def __init__(self, model_dir: Path, threshold: float = 0.0, min_plate_width: float = 60,
                 max_plate_width: float = 640, threads: int = 0) -> None:
        self.model_dir = Path(model_dir)
        meta_path, onnx_path = self.model_dir / "proposer.json", self.model_dir / "proposer.onnx"
        try:
            self.meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{meta_path}: unreadable proposer metadata ({exc})") from None
        if not isinstance(self.meta, dict) or self.meta.get("format") != PROPOSER_FORMAT:
            raise ModelError(f"{meta_path}: not an anprd proposal network of a known format")
        if tuple(self.meta.get("window", ())) != WINDOW:
            raise ModelError(f"{meta_path}: window {self.meta.get('window')} is not {list(WINDOW)}")
        try:
            self.calibrated = float(self.meta["threshold"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{meta_path}: no calibrated threshold") from None
        if not onnx_path.is_file():
            raise ModelError(f"{onnx_path}: proposal network missing")
        try:
            margins = self.meta["margins"]
            self.margins = {key: float(margins[key]) for key in ("centre_x", "centre_y", "log_width")}
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{meta_path}: no error margins") from None
        from anprd.runtime import onnx_network

        self.network = onnx_network(onnx_path, threads)
        self.threshold = threshold
        self.min_plate_width = float(min_plate_width)
        self.max_plate_width = float(max_plate_width)

    @classmethod
    def load(cls, model: str | Path, base_dir: Path | None = None, threshold: float = 0.0,
             min_plate_width: float = 60, max_plate_width: float = 640, threads: int = 0) -> PlateProposer:
        """Find the model folder like the detection network's (`resolve_model_dir`) and load it."""
        return cls(resolve_model_dir(str(model), base_dir, marker="proposer.json"), threshold,
                   min_plate_width, max_plate_width, threads)

    def scales(self, height: int, width: int) -> list[float]:
        """Level scales, largest first: the first puts the narrowest plate at SEARCH_FILL[0] of the
        window; each next one halves, until the widest plate is inside SEARCH_FILL at some level or
        the level is smaller than a window."""
        scales = []
        scale = SEARCH_FILL[0] * WINDOW[0] / self.min_plate_width
        while height * scale >= WINDOW[1] and width * scale >= WINDOW[0]:
            scales.append(scale)
            if SEARCH_FILL[1] * WINDOW[0] / scale >= self.max_plate_width:
                break
            scale /= 2
        if not scales:  # an image smaller than a window at the first level: look at it once, fitted
            scales.append(max(WINDOW[1] / height, WINDOW[0] / width))
        return scales

    def searches(self, gray: np.ndarray, threshold: float | None = None, frame_edges: FrameEdges = ALL_EDGES
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every window scoring above the threshold as a search for the plate it predicts: (N x 4
        boxes x0 y0 x1 y1 in image pixels, N x 2 plate widths, N scores), best first. A box is the
        predicted plate grown by the centre's error margin, the widths the predicted width within
        the width's error margin (proposer.json's `margins`, measured in training). `frame_edges`:
        which sides of `gray` (left, top, right, bottom) are the frame's own edges, which get
        `EDGE_CELLS` of repeated border (a crop's other sides have the frame around them)."""
        left, top, right, bottom = (EDGE_CELLS * 8 * bool(edge) for edge in frame_edges)
        limit = self.calibrated + (self.threshold if threshold is None else threshold)
        h, w = gray.shape[:2]
        boxes, widths, scores = [], [], []
        for scale in self.scales(h, w):
            size = (max(WINDOW[0], round(w * scale)), max(WINDOW[1], round(h * scale)))
            level = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            # whole 8-pixel cells, so every cell's window lies where the training windows did, and
            # EDGE_CELLS more past the frame's edges: a plate at an edge is centred in no window of the
            # level itself, and an off-centre window is a negative by the labelling rule (a 95 px
            # plate 3 px from a street frame's left edge scored 2-4 logits under the threshold, 5-6
            # over it with the border)
            pad_y, pad_x = -size[1] % 8, -size[0] % 8
            level = cv2.copyMakeBorder(level, top, pad_y + bottom, left, pad_x + right,
                                       cv2.BORDER_REPLICATE)
            out = self.network(level[None, :, :, None].astype(np.float32))
            logits, plate = out["proposal"][0, :, :, 0], out["plate"][0]
            rows, cols = np.nonzero(logits > limit)
            if len(rows) == 0:
                continue
            win_w, win_h = WINDOW[0] / scale, WINDOW[1] / scale  # in image pixels
            cx, cy, log_w, log_h = plate[rows, cols].T.astype(np.float64)
            centre_x = ((cols * 8 - left) / scale) + (0.5 + cx) * win_w
            centre_y = ((rows * 8 - top) / scale) + (0.5 + cy) * win_h
            plate_w, plate_h = np.exp(log_w) * win_w, np.exp(log_h) * win_h
            half_w = plate_w / 2 + self.margins["centre_x"] * win_w
            half_h = plate_h / 2 + self.margins["centre_y"] * win_h
            boxes.append(np.column_stack([centre_x - half_w, centre_y - half_h, centre_x + half_w,
                                          centre_y + half_h]))
            spread = math.exp(self.margins["log_width"])
            widths.append(np.column_stack([plate_w / spread, plate_w * spread]))
            scores.append(logits[rows, cols].astype(np.float64))
        if not boxes:
            return np.zeros((0, 4)), np.zeros((0, 2)), np.zeros((0,))
        all_scores = np.concatenate(scores)
        order = np.argsort(-all_scores, kind="stable")
        all_boxes = np.clip(np.concatenate(boxes)[order], 0, [w, h, w, h])
        all_widths = np.clip(np.concatenate(widths)[order], self.min_plate_width, self.max_plate_width)
        return all_boxes, all_widths, all_scores[order]

    def regions(self, gray: np.ndarray, threshold: float | None = None, frame_edges: FrameEdges = ALL_EDGES
                ) -> list[Region]:
        """Merged, clipped proposals in a grayscale uint8 image, best first (`frame_edges`: as in
        `searches`)."""
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError("expected an 8-bit grayscale image")
        boxes, widths, scores = self.searches(gray, threshold, frame_edges)
        keep = widths[:, 0] < widths[:, 1]  # a predicted plate outside the searched widths
        boxes, widths, scores = boxes[keep][:MAX_HITS], widths[keep][:MAX_HITS], scores[keep][:MAX_HITS]
        regions = []
        for group in merge_boxes(boxes, widths[:, 0]):
            box = (float(boxes[group, 0].min()), float(boxes[group, 1].min()),
                   float(boxes[group, 2].max()), float(boxes[group, 3].max()))
            band = (float(widths[group, 0].min()), float(widths[group, 1].max()))
            regions.append(Region(box, band, float(scores[group].max()), "proposer"))
        return sorted(regions, key=lambda r: -r.score)

    def regions_in(self, gray: np.ndarray, areas: tuple[tuple[float, float, float, float], ...],
                   threshold: float | None = None) -> list[Region]:
        """`regions` inside `areas` (x0, y0, x1, y1; `cascade.plan.WHOLE_FRAME` for all of it), in
        `gray`'s pixels, best first. Each area is scanned on its own crop, grown by half a window of
        the narrowest plate's level on every side (a plate centred at the area's edge gets windows
        centred on it) and to at least two such windows each way."""
        first = SEARCH_FILL[0] * WINDOW[0] / self.min_plate_width
        win_w, win_h = WINDOW[0] / first, WINDOW[1] / first
        return regions_in_areas(gray, areas, lambda crop, edges: self.regions(crop, threshold, edges),
                                grow=(win_w, win_h), at_least=(2 * win_w, 2 * win_h), smallest=(8, 8))

    def propose(self, gray: np.ndarray, threshold: float | None = None
                ) -> list[tuple[float, float, float, float]]:
        """Proposed regions (x0, y0, x1, y1) in image pixels, best first."""
        return [r.box for r in self.regions(gray, threshold)]
