"""Motion gate: where something moved since a few frames ago, found at low resolution.

Each frame is shrunk to `width` pixels wide (INTER_AREA) and blurred a little, then compared with
the shrunk frame `gap` frames earlier and with the one before that: a pixel moved when either
difference exceeds `threshold` grey levels. Camera mask polygons (areas the camera ignores) are
blanked out. The moving pixels are closed into blobs, blobs smaller than `min_area` of the frame
are dropped (noise, leaves), and each blob's bounding box, in full-frame pixels, is returned.

Frame differencing rather than a learned background model (MOG2, KNN): it keeps no state beyond
the last few small frames, is the same from the first frame on, and costs about a millisecond at
320 px wide. A car that stops stops being "motion": the tracks (`cascade.tracks`) keep following
the plates already found, and the scheduled whole-frame pass finds one that stopped unseen.

    gate = MotionGate(width=320, threshold=18, gap=2)
    boxes = gate.update(gray)    # [(x0, y0, x1, y1), ...] in gray's pixels; [] while nothing moves
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["MotionGate"]

Box4 = tuple[float, float, float, float]


class MotionGate:
    """Finds the moving parts of a stream of grayscale frames of one camera.

    Parameters
    ----------
    width:
        Width the frames are compared at (height keeps the aspect).
    threshold:
        Grey-level difference that counts as motion.
    gap:
        Frames between the two compared (and, for slow movers, gap + 1 as well).
    min_area:
        Smallest blob kept, as a fraction of the frame area.
    mask:
        Camera mask polygons in full-frame pixels (OpenCV contours); motion inside them is ignored.
    """

    def __init__(self, width: int = 320, threshold: int = 18, gap: int = 2, min_area: float = 0.0005,
                 mask: Sequence[np.ndarray] = ()) -> None:
        if width < 16 or threshold < 1 or gap < 1 or not 0 <= min_area < 1:
            raise ValueError(f"bad motion gate settings: width={width}, threshold={threshold}, gap={gap}, "
                             f"min_area={min_area}")
        self.width = width
        self.threshold = threshold
        self.gap = gap
        self.min_area = min_area
        self._mask_polygons = [np.asarray(c, np.float32).reshape(-1, 2) for c in mask]
        self._history: deque[np.ndarray] = deque(maxlen=gap + 2)
        self._shape: tuple[int, int] | None = None
        self._keep: np.ndarray | None = None  # 255 where motion counts (outside the mask), small size
        self.last_moving_fraction = 0.0  # share of the small frame that moved (metrics, bench)

    def reset(self) -> None:
        """Forget earlier frames (a source reconnected, or the scene cut)."""
        self._history.clear()

    def _small(self, gray: np.ndarray) -> np.ndarray:
        h, w = gray.shape[:2]
        if self._shape != (h, w):  # first frame, or the source changed resolution
            self._shape = (h, w)
            self._history.clear()
            small_h = max(8, round(h * self.width / w))
            self._scale = w / self.width, h / small_h
            keep = np.full((small_h, self.width), 255, np.uint8)
            for polygon in self._mask_polygons:
                points = np.round(polygon / self._scale).astype(np.int32)
                cv2.fillPoly(keep, [points], 0)
            self._keep = keep if self._mask_polygons else None
        size = (self.width, max(8, round(h * self.width / w)))
        small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(small, (5, 5), 0)

    def update(self, gray: np.ndarray) -> list[Box4] | None:
        """Take the next frame; return the moving areas as boxes in its pixels, best (largest) first.

        None until `gap` + 1 frames have been seen (nothing to compare with yet: the caller scans
        the whole frame then).
        """
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError("expected an 8-bit grayscale image")
        small = self._small(gray)
        self._history.append(small)
        if len(self._history) <= self.gap:
            return None
        moved = cv2.absdiff(small, self._history[-1 - self.gap]) > self.threshold
        if len(self._history) > self.gap + 1:  # the slower mover's change over one frame more
            moved |= cv2.absdiff(small, self._history[0]) > self.threshold
        motion = moved.astype(np.uint8) * 255
        if self._keep is not None:
            motion &= self._keep
        self.last_moving_fraction = float(np.count_nonzero(motion)) / motion.size
        if self.last_moving_fraction == 0:
            return []
        # close the gaps between a car's moving edges, so one car is one blob
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (9, 9))
        motion = cv2.dilate(motion, kernel)
        count, _, stats, _ = cv2.connectedComponentsWithStats(motion, connectivity=8)
        min_pixels = self.min_area * motion.size
        sx, sy = self._scale
        boxes = [(float(x * sx), float(y * sy), float((x + w) * sx), float((y + h) * sy))
                 for x, y, w, h, area in stats[1:count] if area >= min_pixels]
        return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))
