"""Turning the reader's per-column CTC posteriors into plate texts.

The reader emits T columns x (36 symbols + blank) probabilities. A text's probability is the sum over
all its CTC alignments; `beam_search` finds the N most probable texts by prefix beam search, and
`pattern_beam_search` does the same under a plate pattern such as UK `@@##@@@` (@ = letter,
# = digit, ? = either), which is how O/0 and I/1 confusions are fixed: the pattern decides which of
the two a position can be, and the posteriors decide the rest.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["ALPHABET", "BLANK", "Pattern", "beam_search", "edit_distance", "greedy_decode",
           "normalise_plate", "parse_pattern", "pattern_beam_search"]

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
BLANK = len(ALPHABET)  # index of the CTC blank, the last column of char_probs
LETTER_IDS = frozenset(range(10, 36))
DIGIT_IDS = frozenset(range(10))
ANY_IDS = frozenset(range(36))
PATTERN_CLASSES = {"@": LETTER_IDS, "#": DIGIT_IDS, "?": ANY_IDS}


def normalise_plate(text: str) -> str:
    """Upper-case, spaces and hyphens removed: the form plates are compared in."""
    return re.sub(r"[\s\-]", "", text).upper()


def edit_distance(first: str, second: str) -> int:
    """Levenshtein distance: the fewest characters inserted, deleted or replaced."""
    previous = list(range(len(second) + 1))
    for i, a in enumerate(first, start=1):
        current = [i]
        for j, b in enumerate(second, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1]


def greedy_decode(probs: np.ndarray) -> str:
    """Best path: the most likely symbol per column, repeats merged, blanks dropped."""
    best = probs.argmax(axis=-1)
    chars, prev = [], -1
    for k in best:
        if k != prev and k != BLANK:
            chars.append(ALPHABET[k])
        prev = int(k)
    return "".join(chars)


@dataclass(frozen=True)
class Pattern:
    """A named plate pattern: per position the set of allowed symbol ids."""

    name: str
    classes: tuple[frozenset[int], ...]


def parse_pattern(name: str, spec: str) -> Pattern:
    """`@@##@@@` -> Pattern; @ letter, # digit, ? either, anything else a literal character."""
    classes = []
    for ch in spec:
        if ch in PATTERN_CLASSES:
            classes.append(PATTERN_CLASSES[ch])
        elif ch.upper() in ALPHABET:
            classes.append(frozenset({ALPHABET.index(ch.upper())}))
        else:
            raise ValueError(f"pattern {name!r}: {ch!r} is not @, #, ? or a letter/digit")
    if not classes:
        raise ValueError(f"pattern {name!r} is empty")
    return Pattern(name, tuple(classes))


def _prefix_beam(log_probs: np.ndarray, beam_width: int, allowed, final_length: int | None,
                 prune: float) -> list[tuple[str, float]]:
    """Prefix beam search. `allowed(prefix_len)` gives the symbol ids that may come next.

    Each column's extensions (every beam by every symbol over `prune`) are scored as one array; a
    plate's columns offer ~14 such symbols to 16 beams, and scoring them one by one in Python was a
    quarter of a video frame's time."""
    rows = log_probs.astype(np.float64)
    above = rows[:, :BLANK] > prune
    # which symbols may follow a prefix of each length (a prefix grows by at most one a column)
    may_follow = np.zeros((len(rows) + 1, BLANK), bool)
    for length in range(len(rows) + 1):
        may_follow[length, list(allowed(length))] = True

    # beams: prefixes (tuples of ids), and log P of each ending in blank (pb) and in non-blank (pnb)
    prefixes: list[tuple[int, ...]] = [()]
    pb, pnb = np.zeros(1), np.full(1, -np.inf)
    for row, keep in zip(rows, above, strict=True):
        total = np.logaddexp(pb, pnb)
        last = np.array([prefix[-1] if prefix else -1 for prefix in prefixes])
        # stay: emit blank, or repeat the last symbol
        stay_b = total + row[BLANK]
        stay_nb = np.where(last >= 0, pnb + row[np.maximum(last, 0)], -np.inf)
        symbols = np.flatnonzero(keep)
        if len(symbols) == 0:  # no symbol worth extending by: the beams stay as they are
            pb, pnb = stay_b, stay_nb
            continue
        # extend beam i by symbol k; a repeated symbol needs a blank in between
        extended = np.where(last[:, None] == symbols[None, :], pb[:, None], total[:, None]) + row[symbols]
        permitted = may_follow[[len(prefix) for prefix in prefixes]][:, symbols]
        # an extension that is another beam's prefix adds to that beam's non-blank ending
        index = {prefix: i for i, prefix in enumerate(prefixes)}
        column = {int(k): c for c, k in enumerate(symbols)}
        for j, prefix in enumerate(prefixes):
            parent = index.get(prefix[:-1]) if prefix else None
            c = column.get(prefix[-1]) if prefix else None
            if parent is not None and c is not None and permitted[parent, c]:
                stay_nb[j] = np.logaddexp(stay_nb[j], extended[parent, c])
                permitted[parent, c] = False
        # the next beams: the best of the stays (beams 0..n-1) and the new prefixes (n...)
        parents, cols = np.nonzero(permitted)
        every_pb = np.concatenate((stay_b, np.full(len(parents), -np.inf)))
        every_pnb = np.concatenate((stay_nb, extended[parents, cols]))
        best = np.argsort(-np.logaddexp(every_pb, every_pnb), kind="stable")[:beam_width]
        n = len(prefixes)
        prefixes = [prefixes[i] if i < n else prefixes[parents[i - n]] + (int(symbols[cols[i - n]]),)
                    for i in best]
        pb, pnb = every_pb[best], every_pnb[best]
    results = []
    for prefix, log_p in zip(prefixes, np.logaddexp(pb, pnb).tolist(), strict=True):
        if final_length is not None and len(prefix) != final_length:
            continue
        results.append(("".join(ALPHABET[k] for k in prefix), log_p))
    results.sort(key=lambda r: -r[1])
    return results


def beam_search(probs: np.ndarray, top_n: int = 5, beam_width: int = 16) -> list[tuple[str, float]]:
    """The `top_n` most probable texts with their probabilities, best first (empty text excluded)."""
    log_probs = np.log(np.clip(probs, 1e-12, 1.0))
    results = _prefix_beam(log_probs, beam_width, lambda _: ANY_IDS, None, math.log(1e-4))
    return [(text, math.exp(lp)) for text, lp in results if text][:top_n]


def pattern_beam_search(probs: np.ndarray, pattern: Pattern, beam_width: int = 16
                        ) -> tuple[str, float] | None:
    """The most probable text that fits `pattern`, or None if no alignment fits."""
    log_probs = np.log(np.clip(probs, 1e-12, 1.0))
    length = len(pattern.classes)

    def allowed(position: int) -> frozenset[int]:
        return pattern.classes[position] if position < length else frozenset()

    results = _prefix_beam(log_probs, beam_width, allowed, length, math.log(1e-6))
    return (results[0][0], math.exp(results[0][1])) if results else None
