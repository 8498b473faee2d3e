"""Turning the reader's per-column CTC posteriors into plate texts.

The reader emits T columns x (36 symbols + blank) probabilities. A text's probability is the sum over
all its CTC alignments; `beam_search` finds the N most probable texts by prefix beam search, and
`pattern_beam_search` does the same under a plate pattern such as UK `@@##@@@` (@ = letter,
# = digit, ? = either), which is how O/0 and I/1 confusions are fixed: the pattern decides which of
the two a position can be, and the posteriors decide the rest.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import defaultdict
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


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


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
    """Prefix beam search. `allowed(prefix_len)` gives the symbol ids that may come next."""
    # beams: prefix (tuple of ids) -> (log P ending in blank, log P ending in non-blank)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}
    # plain floats and lists: NumPy scalar arithmetic is the slow part of a Python loop like this
    rows = log_probs.astype(np.float64).tolist()
    above = (log_probs[:, :BLANK] > prune).tolist()
    for row, keep in zip(rows, above, strict=True):
        candidates = [k for k in range(BLANK) if keep[k]]
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        for prefix, (pb, pnb) in beams.items():
            total = _logsumexp(pb, pnb)
            entry = nxt[prefix]  # stay: emit blank, or repeat the last symbol
            entry[0] = _logsumexp(entry[0], total + row[BLANK])
            if prefix:
                entry[1] = _logsumexp(entry[1], pnb + row[prefix[-1]])
            ok = allowed(len(prefix))
            for k in candidates:
                if k not in ok:
                    continue
                extended = nxt[prefix + (k,)]
                # a repeated symbol needs a blank in between
                source = pb if prefix and prefix[-1] == k else total
                extended[1] = _logsumexp(extended[1], source + row[k])
        scored = heapq.nlargest(beam_width, nxt.items(), key=lambda kv: _logsumexp(*kv[1]))
        beams = {p: (v[0], v[1]) for p, v in scored}
    results = []
    for prefix, (pb, pnb) in beams.items():
        if final_length is not None and len(prefix) != final_length:
            continue
        results.append(("".join(ALPHABET[k] for k in prefix), _logsumexp(pb, pnb)))
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
