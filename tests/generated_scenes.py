"""Generated scenes with known plates, and how a detector scores on them (shared by the detector
and pre-filter tests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from anprd.ctc import normalise_plate
from anprd.types import Box

Scene = tuple[np.ndarray, list[tuple[tuple[int, int, int, int], str]]]


def generated_scenes(seed: int, count: int, **kwargs) -> list[Scene]:
    """`count` BGR scenes from the generator and their ((x, y, w, h), text) plates."""
    from train.fonts import available_fonts
    from train.gen import Backgrounds, builtin_background_dirs, sample_scene

    rng = np.random.default_rng(seed)
    backgrounds = Backgrounds(builtin_background_dirs(), rng)
    fonts = available_fonts()
    return [sample_scene(rng, backgrounds, fonts, **kwargs) for _ in range(count)]


@dataclass
class SceneScore:
    plates: int = 0
    found: int = 0  # a detection with IoU >= 0.3 (the eval's rule)
    read: int = 0  # ... whose text equals the plate's
    false_positives: int = 0


def score_detector(
    detector, scenes: list[Scene], after_detect: Callable[[], None] | None = None
) -> SceneScore:
    """Detect in every scene and count plates found, read, and detections matching no plate;
    `after_detect` is called after each detection (to check the detector's state)."""
    score = SceneScore()
    for image, truth in scenes:
        detections = detector.detect(image)
        if after_detect is not None:
            after_detect()
        matched = set()
        for (x, y, w, h), text in truth:
            score.plates += 1
            best = max(detections, key=lambda d: d.box.iou(Box(x, y, w, h)), default=None)
            if best is not None and best.box.iou(Box(x, y, w, h)) >= 0.3:
                score.found += 1
                matched.add(id(best))
                score.read += normalise_plate(best.text) == text
        score.false_positives += sum(id(d) not in matched for d in detections)
    return score
