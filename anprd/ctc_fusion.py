"""Exact CTC likelihoods of plate strings and their fusion across the frames of a track.

A reader's CTC posteriors (``char_probs``, T columns x (len(ALPHABET) + 1), last column = blank,
or K such reads of one plate) say more than its best string: a frame that misreads "E" as "F"
still gives "E" some probability.
Summing each candidate string's exact log-likelihood over the frames of a track, and taking the
argmax over the union of candidates seen, recovers plates that no single frame read right and that
a majority vote of strings would miss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from anprd.ctc import ALPHABET, BLANK
from anprd.formats import FormatPrior
from anprd.types import Candidate, Detection

if TYPE_CHECKING:
    from anprd.formats import CountryPrior

__all__ = [
    "CandidateFusion",
    "FusedReading",
    "carries_reading",
    "ctc_log_likelihood",
    "ctc_log_likelihoods",
    "views_log_likelihoods",
    "encode_text",
    "fuse_detections",
]

_NUM_CLASSES = len(ALPHABET) + 1
_INDEX = {symbol: index for index, symbol in enumerate(ALPHABET)}


def encode_text(text: str) -> np.ndarray:
    """Class indices of `text` in ``ALPHABET`` order.

    Raises
    ------
    ValueError
        If a character is not in ``ALPHABET``.
    """
    try:
        return np.array([_INDEX[symbol] for symbol in text], dtype=np.intp)
    except KeyError as exc:
        raise ValueError(
            f"character {exc.args[0]!r} of {text!r} is not in the CTC alphabet"
        ) from None


def _check_posteriors(char_probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(char_probs)
    if probs.ndim not in (2, 3) or probs.shape[-1] != _NUM_CLASSES:
        raise ValueError(
            f"char_probs must be (T, {_NUM_CLASSES}) or (F, T, {_NUM_CLASSES}), got {probs.shape}"
        )
    if probs.shape[-2] == 0:
        raise ValueError("char_probs has no columns (T = 0)")
    if not np.all(probs >= 0):  # also catches NaN
        raise ValueError("char_probs must be non-negative probabilities")
    return probs


def ctc_log_likelihoods(texts: Sequence[str], char_probs: np.ndarray) -> np.ndarray:
    """Exact CTC log P(text | posteriors) for several texts at once (forward algorithm).

    Parameters
    ----------
    texts
        K strings over ``ALPHABET``.
    char_probs
        (T, C) posteriors of one frame, or (F, T, C) of F frames with the same T; C =
        len(ALPHABET) + 1, last column blank. Rows are expected to sum to 1.

    Returns
    -------
    np.ndarray
        float64, shape (K,) for one frame or (F, K); -inf where a text is impossible (too long
        for T columns, or through a zero probability).
    """
    probs = _check_posteriors(char_probs)
    single_frame = probs.ndim == 2
    if single_frame:
        probs = probs[None]
    frames, columns, _ = probs.shape
    count = len(texts)
    if count == 0:
        empty = np.zeros((frames, 0))
        return empty[0] if single_frame else empty

    labels = [encode_text(text) for text in texts]
    lengths = np.array([len(label) for label in labels], dtype=np.intp)
    positions = 2 * int(lengths.max()) + 1
    # Extended label: blank, c1, blank, c2, ..., blank; padding (past 2L+1) repeats blank and is
    # never read back, since the recursion only moves information to higher positions.
    extended = np.full((count, positions), BLANK, dtype=np.intp)
    for row, label in enumerate(labels):
        extended[row, 1 : 2 * len(label) : 2] = label
    # A skip from s-2 to s is allowed onto a character that differs from the previous character.
    can_skip = np.zeros((count, positions), dtype=bool)
    can_skip[:, 2:] = (extended[:, 2:] != BLANK) & (extended[:, 2:] != extended[:, :-2])

    with np.errstate(divide="ignore"):
        log_probs = np.log(probs.astype(np.float64, copy=False))
    minus_inf = np.full((frames, count, 1), -np.inf)
    minus_inf2 = np.full((frames, count, 2), -np.inf)

    # log_probs[:, t][:, extended] -> (F, K, S): emission of each extended symbol at column t.
    alpha = np.full((frames, count, positions), -np.inf)
    first = log_probs[:, 0][:, extended]
    alpha[..., 0] = first[..., 0]
    if positions > 1:
        alpha[..., 1] = first[..., 1]
    for column in range(1, columns):
        stay = alpha
        step = np.concatenate((minus_inf, alpha[..., :-1]), axis=-1)
        skip = np.where(can_skip, np.concatenate((minus_inf2, alpha[..., :-2]), axis=-1), -np.inf)
        alpha = np.logaddexp(np.logaddexp(stay, step), skip) + log_probs[:, column][:, extended]

    rows = np.arange(count)
    last = 2 * lengths  # index of the final blank
    ends_on_blank = alpha[:, rows, last]
    ends_on_char = np.where(lengths > 0, alpha[:, rows, np.maximum(last - 1, 0)], -np.inf)
    result = np.logaddexp(ends_on_blank, ends_on_char)
    return result[0] if single_frame else result


def views_log_likelihoods(texts: Sequence[str], reads: np.ndarray) -> np.ndarray:
    """Mean over K reads of log P(text | read), for each text: shape (len(texts),).

    `reads` (K, T, C) are several views of one plate (crops framed differently, several readers).
    The geometric mean ranks texts as the product of the reads' likelihoods does, so a text must
    fit every view; averaging probabilities instead let one confident view carry a wrong text.
    On the detector's own boxes it read more plates than the probability mean in most comparisons
    made and never more than one plate fewer (docs/experiments.md, "Reading several views"). As a
    mean it stays on the scale of one read: a plate's probability, and one frame's evidence in a
    track.
    """
    return ctc_log_likelihoods(texts, _reads(reads)).mean(axis=0)


def ctc_log_likelihood(text: str, char_probs: np.ndarray) -> float:
    """Exact CTC log P(`text` | `char_probs`) for one frame's (T, C) posteriors.

    Returns -inf when no alignment of `text` has non-zero probability.
    """
    if np.asarray(char_probs).ndim != 2:
        raise ValueError(f"char_probs must be (T, {_NUM_CLASSES}), got {np.shape(char_probs)}")
    return float(ctc_log_likelihoods([text], char_probs)[0])


@dataclass(frozen=True)
class FusedReading:
    """A track's plate text fused over its frames.

    confidence: posterior probability of `text` over the scored candidate set (softmax of the
    summed log-likelihoods); candidates: the top-N strings with their posteriors, best first;
    country: the country whose format the text was fitted to (`anprd.formats`), or None.
    """

    text: str
    confidence: float
    candidates: tuple[Candidate, ...]
    country: str | None = None


_EMPTY_READING = FusedReading(text="", confidence=0.0, candidates=())


@dataclass
class _Evidence:
    """One frame's contribution: its detection and, without posteriors, its listed candidates."""

    detection: Detection
    listed_log_confidence: dict[str, float]


def _listed_log_confidence(detection: Detection) -> dict[str, float]:
    listed: dict[str, float] = {}
    readings = [Candidate(detection.text, detection.confidence), *detection.candidates]
    for reading in readings:
        if reading.text and reading.confidence > 0:
            score = math.log(min(reading.confidence, 1.0))
            listed[reading.text] = max(score, listed.get(reading.text, -math.inf))
    return listed


def carries_reading(detection: Detection) -> bool:
    """Whether a detection says anything about its plate's text: a text, candidates or posteriors.
    One without (a plate followed by its box only) is no evidence for fusion."""
    return bool(detection.text or detection.candidates or detection.char_probs is not None)


def _detection_texts(detection: Detection) -> list[str]:
    texts = [detection.text, *(candidate.text for candidate in detection.candidates)]
    return [text for text in dict.fromkeys(texts) if text]


def _reads(char_probs: np.ndarray) -> np.ndarray:
    """A detection's posteriors as (K, T, C): one read (T, C) or K reads of the plate. Not checked
    here: `ctc_log_likelihoods` checks the stacked reads once."""
    probs = np.asarray(char_probs)
    return probs[None] if probs.ndim == 2 else probs


def _is_encodable(text: str) -> bool:
    return all(symbol in _INDEX for symbol in text)


class CandidateFusion:
    """Incremental fusion of one track's readings.

    Keeps a (frames x candidates) matrix of per-frame log-likelihoods: a new frame is scored for
    every known candidate, and a new candidate for every kept frame, so each pair is computed once.

    Parameters
    ----------
    max_frames
        Most confident detections kept as evidence; the least confident is dropped beyond it.
    max_candidates
        Candidate strings kept; the least likely are pruned (and rescored exactly if seen again).
    log_floor
        Lowest per-frame log-likelihood of a candidate (one bad frame cannot veto a plate); also
        the score of a candidate a frame without posteriors did not list.
    top_n
        Candidates returned in the fused reading.
    prior
        Returns the configured countries' formats (`anprd.formats.CountryPrior`), a fine-tuned
        model's own format counts (`anprd.formats.FormatPrior`) or None; the fused ranking is
        fitted to them as each frame's reading is (a callable: a reload can change it).
    effective_frames
        How many independent frames a track's evidence counts as for its confidence. Frames of
        one plate share its blur, angle and font, so their errors are correlated: summing 100
        frames' log-likelihoods as if independent reports 100% for a plate read two ways. The
        summed log-likelihoods are scaled by ``min(1, effective_frames / frames)`` before the
        softmax; the ranking of candidates does not change, only their probabilities.
    """

    def __init__(
        self,
        *,
        max_frames: int = 50,
        max_candidates: int = 32,
        log_floor: float = -14.0,
        top_n: int = 5,
        effective_frames: float = 3.0,
        prior: Callable[[], CountryPrior | FormatPrior | None] | None = None,
    ) -> None:
        if max_frames < 1 or max_candidates < 1 or top_n < 1:
            raise ValueError("max_frames, max_candidates and top_n must be >= 1")
        if not log_floor < 0:
            raise ValueError(f"log_floor must be negative, got {log_floor}")
        if not effective_frames >= 1:
            raise ValueError(f"effective_frames must be >= 1, got {effective_frames}")
        self._effective_frames = effective_frames
        self._prior = prior
        self._max_frames = max_frames
        self._max_candidates = max_candidates
        self._log_floor = log_floor
        self._top_n = top_n
        self._evidence: list[_Evidence] = []
        self._texts: list[str] = []
        self._scores = np.zeros((0, 0))  # frames x candidates
        self._reading: FusedReading | None = _EMPTY_READING

    @property
    def detections(self) -> list[Detection]:
        """Detections kept as evidence, in arrival order."""
        return [evidence.detection for evidence in self._evidence]

    def add(self, detection: Detection) -> None:
        """Add one frame's detection to the evidence."""
        new_texts = [text for text in _detection_texts(detection) if text not in self._texts]
        evidence = _Evidence(detection, _listed_log_confidence(detection))
        if new_texts:
            # Score the new candidates on the frames already kept.
            old_rows = self._score(self._evidence, new_texts)
            self._scores = np.concatenate((self._scores, old_rows), axis=1)
            self._texts.extend(new_texts)
        self._evidence.append(evidence)
        self._scores = np.concatenate((self._scores, self._score([evidence], self._texts)), axis=0)
        if len(self._evidence) > self._max_frames:
            weakest = min(
                range(len(self._evidence)),
                key=lambda row: self._evidence[row].detection.confidence,
            )
            del self._evidence[weakest]
            self._scores = np.delete(self._scores, weakest, axis=0)
        if len(self._texts) > self._max_candidates:
            keep = np.sort(
                np.argsort(-self._scores.sum(axis=0), kind="stable")[: self._max_candidates]
            )
            self._texts = [self._texts[index] for index in keep]
            self._scores = self._scores[:, keep]
        self._reading = None

    def reading(self) -> FusedReading:
        """The fused plate text, its posterior and the top-N candidates (empty before any text)."""
        if self._reading is None:
            self._reading = self._fuse()
        return self._reading

    def _fuse(self) -> FusedReading:
        if not self._texts:
            return _EMPTY_READING
        totals = self._scores.sum(axis=0) * min(1.0, self._effective_frames / len(self._evidence))
        posteriors = np.exp(totals - totals.max())
        posteriors /= posteriors.sum()
        # Stable order: ties go to the candidate seen first.
        order = np.argsort(-posteriors, kind="stable")
        ranked = [(self._texts[i], float(posteriors[i])) for i in order]
        prior = self._prior() if self._prior is not None else None
        if isinstance(prior, FormatPrior):  # a fine-tuned model's formats: a soft prior, no fit
            ranked = prior.rank([t for t, _ in ranked], [math.log(max(p, 1e-300)) for _, p in ranked])
            prior = None
        fit = prior.choose(ranked) if prior else None
        if fit is not None:
            # the posterior of what the frames showed; the format names its look-alikes
            confidence = max(p for t, p in ranked if t in (fit.text, fit.source))
            ranked = [(fit.text, confidence)] + [r for r in ranked if r[0] != fit.text]
        candidates = tuple(Candidate(t, p) for t, p in ranked[: self._top_n])
        return FusedReading(candidates[0].text, candidates[0].confidence, candidates,
                            fit.country if fit is not None else None)

    def _score(self, evidence: Sequence[_Evidence], texts: Sequence[str]) -> np.ndarray:
        """Per-frame log-likelihoods, shape (len(evidence), len(texts)), floored."""
        scores = np.full((len(evidence), len(texts)), self._log_floor)
        if not evidence or not texts:
            return scores
        ctc_columns = [i for i, text in enumerate(texts) if _is_encodable(text)]
        # Frames with posteriors, grouped by shape so each group is one batched forward pass.
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for row, item in enumerate(evidence):
            probs = item.detection.char_probs
            with_posteriors = probs is not None and bool(ctc_columns)
            if with_posteriors:
                by_shape.setdefault(np.shape(probs), []).append(row)
            # Without posteriors (or for a string the reader cannot emit): the listed confidence.
            for column, text in enumerate(texts):
                if with_posteriors and _is_encodable(text):
                    continue
                listed = item.listed_log_confidence.get(text)
                if listed is not None:
                    scores[row, column] = listed
        for rows in by_shape.values():
            # (frames, reads, T, C): a detection read K times (crops at several scales, several
            # readers) scores a text by the mean of its reads' log-likelihoods
            # (`views_log_likelihoods`), so the frame still counts once.
            stack = np.stack([_reads(evidence[row].detection.char_probs) for row in rows])
            frames, reads = stack.shape[:2]
            likelihoods = ctc_log_likelihoods(
                [texts[c] for c in ctc_columns], stack.reshape(frames * reads, *stack.shape[2:])
            ).reshape(frames, reads, -1)
            scores[np.ix_(rows, ctc_columns)] = likelihoods.mean(axis=1)
        return np.maximum(scores, self._log_floor)


def fuse_detections(
    detections: Iterable[Detection],
    *,
    top_n: int = 5,
    log_floor: float = -14.0,
    effective_frames: float = 3.0,
) -> FusedReading:
    """Fuse all `detections` of one plate at once (see `CandidateFusion`, without caps)."""
    items = list(detections)
    fusion = CandidateFusion(
        max_frames=max(1, len(items)),
        max_candidates=max(1, sum(1 + len(d.candidates) for d in items)),
        log_floor=log_floor,
        top_n=top_n,
        effective_frames=effective_frames,
    )
    for detection in items:
        fusion.add(detection)
    return fusion.reading()
