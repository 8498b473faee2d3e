"""Drawing found plates on an image for a person to look at (`anprd detect --annotate`, the
annotated video of `anprd replay`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from anprd.types import Detection

__all__ = ["draw_detections", "overwritten_input"]


def draw_detections(image: np.ndarray, detections: Sequence[Detection],
                    track_ids: Sequence[int] | None = None) -> np.ndarray:
    """A copy of `image` with each plate's box, text and confidence drawn for a person to look at."""
    out = image.copy()
    for i, det in enumerate(detections):
        x, y, w, h = (int(round(v)) for v in (det.box.x, det.box.y, det.box.w, det.box.h))
        cv2.rectangle(out, (x, y), (x + w, y + h), (0, 255, 0), 2)
        label = f"{det.text} {det.confidence:.2f}"
        if track_ids is not None:
            label = f"#{track_ids[i]} {label}"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 2)
        ty = y - 6 if y - th - 8 > 0 else y + h + th + 6
        cv2.rectangle(out, (x, ty - th - 4), (x + tw + 4, ty + 4), (0, 0, 0), -1)
        cv2.putText(out, label, (x + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 255), 2)
    return out


def overwritten_input(out: Path, inputs: Iterable[Path]) -> Path | None:
    """The input that writing `out` would destroy (the same file, by any path to it), or None."""
    if not out.exists():
        return None
    for path in inputs:
        try:
            if path.exists() and out.samefile(path):
                return path
        except OSError:  # unreadable: cannot be the file we are about to read either
            continue
    return None
