"""Score the detector on a folder of labelled photos (`anprd eval DIR`).

DIR/labels.tsv: `file<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE`, one row per plate, `#` comments; a row with
an empty box means an image without plates. Scoring:
- a truth plate is detected when a predicted box has IoU >= 0.3 with it (one prediction per truth,
  matched by Hungarian assignment on IoU);
- it is read when that prediction's text equals the label, spaces and hyphens ignored;
- a false positive is a prediction matched to no truth plate;
- char_accuracy = 1 - (sum of edit distances) / (sum of label lengths), a missed plate costing its
  whole length and each plate's cost capped at its length.

Where the errors are (keys beside those, `anprd eval --json`):
- missed: truth plates matched by no prediction (plates - detected);
- low_iou: missed plates that a false-positive box (one matched to no plate) overlaps with
  0.05 <= IoU < 0.3: the detector fired near the plate but its box landed off it (a strip above it,
  half a plate). A box matched to another plate does not count: it found its own plate;
- misread_kinds: {length, one_i, o_zero_d, other}, the detected plates read wrongly, each counted
  once (`misread_kind`): `length` when the read's length differs from the label's; else `one_i`
  when every differing position is a 1<->I swap; else `o_zero_d` when every differing position
  swaps two of O, 0, D, Q; else `other` (a read mixing 1/I and O/0 swaps, or any other swap);
  they sum to detected - read_exact;
- confusions: the 10 commonest (truth char, read char) substitutions in those misreads as
  `[truth, read, count]`, most frequent first, ties in character order (`confusion_pairs`): position
  by position for a read of the label's length, else along a fewest-edits (Levenshtein) alignment
  whose inserted and dropped characters are not counted;
- calibration_error: expected calibration error of the reported confidence over the detected
  plates (`expected_calibration_error`): confidences in 10 equal-width bins on [0, 1] (1.0 in the
  last), the sum over bins of (plates in the bin / detected) * |mean confidence - fraction read
  right|; null when no plate was detected.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from anprd.ctc import ALPHABET, edit_distance, normalise_plate
from anprd.errors import AnprdError
from anprd.imageio import read_image
from anprd.types import Box, Detection

__all__ = ["CalibrationBin", "EvalError", "EvalReport", "LabelledImage", "calibration_bins",
           "confusion_pairs", "evaluate", "evaluate_images", "expected_calibration_error", "misread_kind",
           "read_labels", "score_image", "substitutions"]

IOU_MATCH = 0.3
IOU_LOW = 0.05  # a false-positive box overlapping a missed plate at least this much landed off it
MISREAD_KINDS = ("length", "one_i", "o_zero_d", "other")
TOP_CONFUSIONS = 10
CALIBRATION_BINS = 10
_ONE_I = frozenset("1I")
_ROUND = frozenset("O0DQ")


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
    missed: int  # truth plates matched by no prediction
    low_iou: int  # of those, the ones a false-positive box overlaps with IOU_LOW <= IoU < IOU_MATCH
    reads: list[tuple[str, str, float]]  # (truth, read, confidence) for every detected plate


def score_image(truth: list[tuple[Box, str]], predicted: list[Detection]) -> ImageScore:
    """Match predictions to truth plates by IoU (Hungarian) and count what the README reports."""
    matched: dict[int, int] = {}
    iou = np.zeros((len(truth), len(predicted)))
    if truth and predicted:
        iou = np.array([[t.iou(p.box) for p in predicted] for t, _ in truth])
        rows, cols = linear_sum_assignment(-iou)
        matched = {int(r): int(c) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= IOU_MATCH}
    read = errors = 0
    misreads = []
    reads = []
    for i, (_, plate) in enumerate(truth):
        if i in matched:
            detection = predicted[matched[i]]
            text = normalise_plate(detection.text)
            read += text == plate
            errors += min(len(plate), edit_distance(text, plate))
            reads.append((plate, text, float(detection.confidence)))
            if text != plate:
                misreads.append((plate, text))
        else:
            errors += len(plate)
    missed = [i for i in range(len(truth)) if i not in matched]
    unmatched = [j for j in range(len(predicted)) if j not in matched.values()]
    low_iou = sum(any(IOU_LOW <= iou[i, j] < IOU_MATCH for j in unmatched) for i in missed)
    return ImageScore(len(truth), len(matched), read, errors, sum(len(p) for _, p in truth),
                      len(predicted) - len(matched), misreads, missed=len(missed), low_iou=low_iou,
                      reads=reads)


# -- where the errors are: pure functions of (truth, read) pairs and confidences -------------------
def misread_kind(truth: str, read: str) -> str:
    """One of MISREAD_KINDS for a plate read wrongly (texts compared as given, normalised already).

    `length`: the read has another length than the label; else `one_i`: every differing position
    is a 1<->I swap; else `o_zero_d`: every differing position swaps two of O, 0, D, Q; else
    `other` (including a read that mixes 1/I and O/0 swaps). Raises ValueError when read == truth.
    """
    if truth == read:
        raise ValueError(f"not a misread: {truth!r} read as itself")
    if len(truth) != len(read):
        return "length"
    swaps = [{t, r} for t, r in zip(truth, read, strict=True) if t != r]
    if all(swap == _ONE_I for swap in swaps):
        return "one_i"
    if all(swap <= _ROUND for swap in swaps):
        return "o_zero_d"
    return "other"


def substitutions(truth: str, read: str) -> list[tuple[str, str]]:
    """The (truth char, read char) substitutions that turn `truth` into `read`, in order.

    Reads of the label's length are compared position by position. Others are aligned with the
    fewest edits (Levenshtein, as `anprd.ctc.edit_distance`) and only the substitutions on that
    alignment are returned, not the inserted or dropped characters; where several alignments are
    equally short, the backtrace from the end takes a match or substitution first, then a dropped
    truth character, then an inserted one.
    """
    if len(truth) == len(read):
        return [(t, r) for t, r in zip(truth, read, strict=True) if t != r]
    cost = [[0] * (len(read) + 1) for _ in range(len(truth) + 1)]  # cost[i][j]: truth[:i] -> read[:j]
    cost[0] = list(range(len(read) + 1))
    for i, t in enumerate(truth, start=1):
        cost[i][0] = i
        for j, r in enumerate(read, start=1):
            cost[i][j] = min(cost[i - 1][j] + 1, cost[i][j - 1] + 1, cost[i - 1][j - 1] + (t != r))
    found: list[tuple[str, str]] = []
    i, j = len(truth), len(read)
    while i and j:
        t, r = truth[i - 1], read[j - 1]
        if cost[i][j] == cost[i - 1][j - 1] + (t != r):
            if t != r:
                found.append((t, r))
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            i -= 1  # truth character dropped
        else:
            j -= 1  # character inserted
    return found[::-1]


def confusion_pairs(pairs: Iterable[tuple[str, str]],
                    top: int = TOP_CONFUSIONS) -> list[tuple[str, str, int]]:
    """The `top` commonest (truth char, read char, count) over the `substitutions` of (truth, read)
    pairs, most frequent first, ties in character order. Pairs read right add nothing."""
    counts = Counter(swap for truth, read in pairs for swap in substitutions(truth, read))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [(t, r, n) for (t, r), n in ranked[:top]]


@dataclass(frozen=True)
class CalibrationBin:
    """One confidence bin [low, high) (the last one [low, 1]) of the reliability table."""

    low: float
    high: float
    count: int  # plates whose confidence fell in the bin
    mean_confidence: float
    accuracy: float  # fraction of them read right


def calibration_bins(confidences: Sequence[float], correct: Sequence[bool],
                     bins: int = CALIBRATION_BINS) -> list[CalibrationBin]:
    """The non-empty bins of `bins` equal-width confidence bins on [0, 1], lowest first.

    A confidence is clipped to [0, 1] and lands in bin min(floor(confidence * bins), bins - 1), so
    1.0 counts in the last bin. Raises ValueError for a NaN confidence, `bins` < 1, or sequences of
    different lengths.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences but {len(correct)} outcomes")
    groups: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for confidence, right in zip(confidences, correct, strict=True):
        if math.isnan(confidence):
            raise ValueError("confidence is NaN")
        confidence = min(1.0, max(0.0, float(confidence)))
        groups[min(int(confidence * bins), bins - 1)].append((confidence, bool(right)))
    return [CalibrationBin(k / bins, (k + 1) / bins, len(group),
                           sum(c for c, _ in group) / len(group), sum(r for _, r in group) / len(group))
            for k, group in enumerate(groups) if group]


def _ece(table: list[CalibrationBin]) -> float | None:
    total = sum(b.count for b in table)
    if not total:
        return None
    return sum(b.count / total * abs(b.mean_confidence - b.accuracy) for b in table)


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool],
                               bins: int = CALIBRATION_BINS) -> float | None:
    """Expected calibration error: over `calibration_bins`, the sum of (bin count / total) *
    |mean confidence - fraction right|; 0 for a perfectly calibrated reader, None for no plates."""
    return _ece(calibration_bins(confidences, correct, bins))


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
    missed: int
    low_iou: int
    calibration: list[CalibrationBin]  # non-empty bins of the detected plates' confidence

    @property
    def misread_kinds(self) -> dict[str, int]:
        """Each misread counted once under its `misread_kind`; sums to detected - read_exact."""
        counts = Counter(misread_kind(truth, read) for truth, read in self.misreads)
        return {kind: counts[kind] for kind in MISREAD_KINDS}

    @property
    def confusions(self) -> list[tuple[str, str, int]]:
        return confusion_pairs(self.misreads)

    @property
    def calibration_error(self) -> float | None:
        return _ece(self.calibration)

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
            "missed": self.missed,
            "low_iou": self.low_iou,
            "misread_kinds": self.misread_kinds,
            "confusions": [list(c) for c in self.confusions],
            "calibration_error": None if (ece := self.calibration_error) is None else round(ece, 4),
        }

    def o0_only_errors(self) -> int:
        """Misreads that are right once O and 0 are treated as one symbol."""
        return sum(t.replace("O", "0") == r.replace("O", "0") for t, r in self.misreads)

    def _summary_rows(self) -> list[tuple[str, str]]:
        return [
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

    def table(self) -> str:
        rows = self._summary_rows()
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def breakdown(self) -> str:
        """Where the errors are, printed after `table()` in its columns: misses, misread kinds, top
        confusions (truth->read), calibration error and a reliability table of the non-empty bins."""
        kinds = self.misread_kinds
        ece = self.calibration_error
        rows = [
            ("missed", f"{self.missed} ({self.low_iou} with a box off the plate, "
                       f"IoU {IOU_LOW:g} to {IOU_MATCH:g})"),
            ("misread kinds", f"length {kinds['length']}, 1/I {kinds['one_i']}, "
                              f"O/0/D/Q {kinds['o_zero_d']}, other {kinds['other']}"),
            ("top confusions", ", ".join(f"{t}->{r} {n}" for t, r, n in self.confusions) or "none"),
            ("calibration error", "- (nothing detected)" if ece is None
             else f"{ece:.3f} (ECE, {CALIBRATION_BINS} confidence bins)"),
        ]
        if self.calibration:
            rows.append(("reliability", "confidence  plates  read right  mean confidence"))
            rows += [("", f"{b.low:.1f}-{b.high:.1f}     {b.count:>6}  {b.accuracy:>10.1%}  "
                          f"{b.mean_confidence:>15.3f}") for b in self.calibration]
        width = max(len(k) for k, _ in self._summary_rows() + rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def evaluate(folder: Path, detect: Callable[[np.ndarray], list[Detection]],
             progress: Callable[[int, int], None] | None = None) -> EvalReport:
    """Run `detect` on every labelled image of `folder` and score it."""
    return evaluate_images(read_labels(folder), detect, progress)


def evaluate_images(images: list[LabelledImage], detect: Callable[[np.ndarray], list[Detection]],
                    progress: Callable[[int, int], None] | None = None) -> EvalReport:
    """`evaluate` on some labelled images (`read_labels`' entries), such as a held-out part of a folder."""
    if not images:
        raise EvalError("no labelled images to evaluate")
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
        missed=sum(s.missed for s in scores),
        low_iou=sum(s.low_iou for s in scores),
        calibration=calibration_bins([c for s in scores for _, _, c in s.reads],
                                     [t == r for s in scores for t, r, _ in s.reads]),
    )
