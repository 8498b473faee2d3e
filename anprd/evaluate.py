"""Score the detector on a folder of labelled photos (`anprd eval DIR`).

DIR/labels.tsv: `file<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE`, one row per plate, `#` comments; a row with
an empty box means an image without plates. Scoring:
- a truth plate is detected when a predicted box has IoU >= 0.3 with it (one prediction per truth,
  matched by Hungarian assignment on IoU);
- it is read when that prediction's text equals the label, spaces and hyphens ignored;
- a false positive is a prediction matched to no truth plate;
- char_accuracy = 1 - (sum of edit distances) / (sum of label lengths), a missed plate costing its
  whole length and each plate's cost capped at its length.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from anprd.ctc import ALPHABET, edit_distance, normalise_plate
from anprd.errors import AnprdError
from anprd.imageio import read_image
from anprd.types import Box, Detection

__all__ = ["EvalError", "EvalReport", "LabelledImage", "evaluate", "read_labels",
           "score_image"]

IOU_MATCH = 0.3


class EvalError(AnprdError):
    """Bad evaluation input; the message names the file (and line)."""


@dataclass
class LabelledImage:
    path: Path
    plates: list[tuple[Box, str]] = field(default_factory=list)


def read_labels(folder: Path) -> list[LabelledImage]:
    """Parse folder/labels.tsv; raises EvalError naming the file and line of any bad row."""
    if not folder.is_dir():
        raise EvalError(f"{folder}: not a folder")
    labels = folder / "labels.tsv"
    if labels.is_dir():
        raise EvalError(f"{labels}: is a folder, expected the labels file")
    if not labels.is_file():
        raise EvalError(f"{labels}: missing (expected file, x, y, w, h, PLATE per line)")
    images: dict[str, LabelledImage] = {}
    for number, line in enumerate(labels.read_text(errors="replace").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        where = f"{labels}:{number}"
        if len(cols) not in (5, 6) or not cols[0].strip():
            raise EvalError(f"{where}: expected 6 tab-separated columns (file x y w h PLATE), "
                            f"got {len(cols)}")
        name = cols[0].strip()
        if not (folder / name).is_file():
            raise EvalError(f"{where}: image not found: {folder / name}")
        entry = images.setdefault(name, LabelledImage(folder / name))
        if all(not c.strip() for c in cols[1:]):
            continue  # an image without plates
        try:
            x, y, w, h = (float(c) for c in cols[1:5])
        except ValueError:
            raise EvalError(f"{where}: box must be numbers, got {cols[1:5]}") from None
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            raise EvalError(f"{where}: box must be finite numbers, got {cols[1:5]}")
        plate = normalise_plate(cols[5]) if len(cols) == 6 else ""
        if w <= 0 or h <= 0 or not plate or not set(plate) <= set(ALPHABET):
            raise EvalError(f"{where}: need a positive box and a plate of A-Z and 0-9 (what the reader "
                            f"reads), got w={w:g} h={h:g} plate={cols[5] if len(cols) == 6 else ''!r}")
        entry.plates.append((Box(x, y, w, h), plate))
    if not images:
        raise EvalError(f"{labels}: no labelled images")
    return list(images.values())


@dataclass
class ImageScore:
    plates: int
    detected: int
    read_exact: int
    char_errors: int
    char_total: int
    false_positives: int
    misreads: list[tuple[str, str]]  # (truth, read) for detected plates read wrongly


def score_image(truth: list[tuple[Box, str]], predicted: list[Detection]) -> ImageScore:
    """Match predictions to truth plates by IoU (Hungarian) and count what the README reports."""
    matched: dict[int, int] = {}
    if truth and predicted:
        iou = np.array([[t.iou(p.box) for p in predicted] for t, _ in truth])
        rows, cols = linear_sum_assignment(-iou)
        matched = {int(r): int(c) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= IOU_MATCH}
    read = errors = 0
    misreads = []
    for i, (_, plate) in enumerate(truth):
        if i in matched:
            text = normalise_plate(predicted[matched[i]].text)
            read += text == plate
            errors += min(len(plate), edit_distance(text, plate))
            if text != plate:
                misreads.append((plate, text))
        else:
            errors += len(plate)
    return ImageScore(len(truth), len(matched), read, errors, sum(len(p) for _, p in truth),
                      len(predicted) - len(matched), misreads)


@dataclass
class EvalReport:
    images: int
    plates: int
    detected: int
    read_exact: int
    char_accuracy: float
    false_positives: int
    ms_per_image: float
    misreads: list[tuple[str, str]]

    @property
    def read_rate(self) -> float:
        return self.read_exact / self.plates if self.plates else 0.0

    @property
    def detection_recall(self) -> float:
        return self.detected / self.plates if self.plates else 0.0

    def as_json(self) -> dict:
        """Exactly the keys `anprd eval --json` promises."""
        return {
            "images": self.images,
            "plates": self.plates,
            "detected": self.detected,
            "read_exact": self.read_exact,
            "read_rate": round(self.read_rate, 4),
            "detection_recall": round(self.detection_recall, 4),
            "char_accuracy": round(self.char_accuracy, 4),
            "false_positives": self.false_positives,
            "ms_per_image": round(self.ms_per_image, 1),
        }

    def o0_only_errors(self) -> int:
        """Misreads that are right once O and 0 are treated as one symbol."""
        return sum(t.replace("O", "0") == r.replace("O", "0") for t, r in self.misreads)

    def table(self) -> str:
        rows = [
            ("images", f"{self.images}"),
            ("plates", f"{self.plates}"),
            ("detected", f"{self.detected}"),
            ("detection recall", f"{self.detection_recall:.1%}"),
            ("read exactly", f"{self.read_exact}"),
            ("read rate", f"{self.read_rate:.1%}"),
            ("character accuracy", f"{self.char_accuracy:.1%}"),
            ("false positives", f"{self.false_positives} ({self.false_positives / max(1, self.images):.2f}"
                                " per image)"),
            ("misreads only O/0", f"{self.o0_only_errors()}"),
            ("ms per image", f"{self.ms_per_image:.0f}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def evaluate(folder: Path, detect: Callable[[np.ndarray], list[Detection]],
             progress: Callable[[int, int], None] | None = None) -> EvalReport:
    """Run `detect` on every labelled image of `folder` and score it."""
    images = read_labels(folder)
    scores: list[ImageScore] = []
    elapsed = 0.0
    for i, item in enumerate(images):
        image = read_image(item.path)  # ImageReadError names the file and the reason
        start = time.perf_counter()
        predicted = detect(image)
        elapsed += time.perf_counter() - start
        scores.append(score_image(item.plates, predicted))
        if progress:
            progress(i + 1, len(images))
    char_total = sum(s.char_total for s in scores)
    return EvalReport(
        images=len(images),
        plates=sum(s.plates for s in scores),
        detected=sum(s.detected for s in scores),
        read_exact=sum(s.read_exact for s in scores),
        char_accuracy=1 - sum(s.char_errors for s in scores) / char_total if char_total else 0.0,
        false_positives=sum(s.false_positives for s in scores),
        ms_per_image=1000 * elapsed / len(images),
        misreads=[m for s in scores for m in s.misreads],
    )
