"""Country plate formats as a reading prior (`detector.countries`).

A reader trained on many fonts cannot know that a UK plate's third and fourth characters are digits,
so on a font whose 1 is a bare bar it reads `LSI5EBC` and is sure of it. The format knows better,
but only for characters that *look alike*: the prior may turn I into 1 or O into 0 where the format
demands it, and drop the characters at either end that its bands can show (the EU band's
country letters, a French department number); it never changes a character into one of another
shape. That is why it can be strong: among the readings compatible with what the reader saw, one
that fits a format of the configured countries wins, however sure the reader was of a look-alike.

The formats come from the style library (`anprd.styles`), the same data the training plates are
rendered from.

A fine-tuned model folder may carry its own formats instead (`FormatPrior`, model.json `formats`:
how often each format occurs among the user's labelled plates). Those are one camera's habits, with
rare formats seen once or not at all, so they act softly: a reading's score is the reader's log
probability plus the log of its format's share, and a reader sure of a rare format keeps it.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from anprd.styles import DIGITS, LETTERS, Country, country_code, load_countries

__all__ = ["LOOK_ALIKES", "CountryFit", "CountryPrior", "FormatPrior", "formats_right", "plate_format"]

# characters that plate fonts draw alike (../shared/PLATES.md "Glyph variants that matter")
LOOK_ALIKES = ("0ODQ", "1I", "2Z", "5S", "8B", "6G")
_ALIKE: dict[str, str] = {c: group for group in LOOK_ALIKES for c in group}
MAX_DROPPED = 3  # characters a band can add at either end (a French department: 974)
DROP_COST = 0.5
MAX_VARIANTS = 64


@dataclass(frozen=True)
class CountryFit:
    text: str  # the reading as the format has it
    source: str  # the reader's text it came from
    country: str
    dropped: int  # characters dropped at the ends


class CountryPrior:
    """Formats of the configured countries, grouped by length for quick matching."""

    def __init__(self, codes: Sequence[str], countries: dict[str, Country] | None = None) -> None:
        countries = load_countries() if countries is None else countries
        self.codes = tuple(dict.fromkeys(country_code(c, countries) for c in codes))
        self._by_length: dict[int, list[tuple[str, tuple[frozenset[str], ...], re.Pattern | None,
                                              re.Pattern | None]]] = {}
        for code in self.codes:
            for sets, left, right in countries[code].patterns():
                self._by_length.setdefault(len(sets), []).append(
                    (code, sets, re.compile(left) if left else None, re.compile(right) if right else None))

    def __bool__(self) -> bool:
        return bool(self.codes)

    def fits(self, text: str) -> list[CountryFit]:
        """The format-fitting readings `text` can become by look-alike swaps and by dropping band
        characters at its ends, the cheapest changes only (a swap costs 1, a dropped character
        `DROP_COST`: bands put characters at the ends far more often than a reader sees the wrong
        one of two look-alikes in the middle)."""
        found: dict[str, tuple[float, CountryFit]] = {}
        for left in range(MAX_DROPPED + 1):
            for right in range(MAX_DROPPED + 1):
                core = text[left: len(text) - right]
                before, after = text[:left], text[len(text) - right:]
                for country, sets, left_marks, right_marks in self._by_length.get(len(core), ()):
                    if not (_is_mark(before, left_marks) and _is_mark(after, right_marks)):
                        continue  # what would be dropped is not what this format's bands show
                    for fitted, swapped in _swaps(core, sets):
                        cost = swapped + DROP_COST * (left + right)
                        if fitted not in found or cost < found[fitted][0]:
                            found[fitted] = (cost, CountryFit(fitted, text, country, left + right))
        if not found:
            return []
        cheapest = min(cost for cost, _ in found.values())
        return [fit for cost, fit in found.values() if cost == cheapest]

    def choose(self, ranked: Sequence[tuple[str, float]],
               log_likelihood: Callable[[list[str]], Sequence[float]] | None = None,
               min_ratio: float = 1e-3) -> CountryFit | None:
        """The format reading for the most probable of `ranked` (text, probability; best first) that
        has one, among those within `min_ratio` of the best. Several fits of one reading are ranked by
        `log_likelihood` (the reader's evidence for each), else by the order found."""
        if not ranked or not self:
            return None
        best = ranked[0][1]
        for text, probability in ranked:
            if probability < min_ratio * best:
                break
            fits = self.fits(text)
            if not fits:
                continue
            if len(fits) > 1 and log_likelihood is not None:
                scores = log_likelihood([f.text for f in fits])
                fits = [f for _, f in sorted(zip(scores, fits, strict=True), key=lambda sf: -sf[0])]
            return fits[0]
        return None


def _is_mark(dropped: str, marks: re.Pattern | None) -> bool:
    """Whether `dropped` (characters at one end) can be a band's print: one of `marks`, allowing
    look-alikes (a reader sees the 0 of "40" as O as readily as in the text)."""
    if not dropped:
        return True
    if marks is None:
        return False
    variants = itertools.product(*(_ALIKE.get(c, c) for c in dropped))
    return any(marks.fullmatch("".join(v)) for v in itertools.islice(variants, MAX_VARIANTS))


def _swaps(core: str, sets: tuple[frozenset[str], ...]) -> list[tuple[str, int]]:
    """`core` with each character outside its position's set replaced by a look-alike inside it,
    and how many were replaced."""
    options = []
    swapped = 0
    for char, allowed in zip(core, sets, strict=True):
        if char in allowed:
            options.append((char,))
            continue
        alike = tuple(c for c in _ALIKE.get(char, "") if c != char and c in allowed)
        if not alike:
            return []
        options.append(alike)
        swapped += 1
    return [("".join(p), swapped) for p in itertools.islice(itertools.product(*options), MAX_VARIANTS)]


# --------------------------------------------------------------------------------------------------
# The user's own formats (a fine-tuned model folder's `formats`)
# --------------------------------------------------------------------------------------------------
FORMAT_ALPHA = 1.0  # Laplace smoothing: a format never seen keeps this many plates' worth of mass
UNSEEN_FORMATS = 10  # the mass of unseen formats is shared among this many of them


def plate_format(text: str) -> str:
    """A reading's format: `#` for each digit, `@` for each letter (`AB123CD` -> `@@###@@`)."""
    return "".join("#" if c.isdigit() else "@" for c in text)


class FormatPrior:
    """How often each format occurs among a camera's plates (counted from the labels a model was
    fine-tuned on), as a soft prior over the reader's readings: a reading's score is the reader's
    log probability plus the log of its format's share, so a format seen often outweighs an unsure
    look-alike (an O in a digit block), while a reader sure of what it saw keeps a rare or unseen
    format. Unlike `CountryPrior` it changes no reading into a format outright; it only adds
    look-alike variants of the reader's best texts that fit a known format to the texts compared.

    Shares are smoothed (`FORMAT_ALPHA` plates' worth for all unseen formats, split among
    `UNSEEN_FORMATS`): a plate of a format the labels lacked is not forced into one they had.
    """

    def __init__(self, counts: dict[str, int], alpha: float = FORMAT_ALPHA,
                 unseen_formats: int = UNSEEN_FORMATS) -> None:
        self.counts = {form: int(n) for form, n in counts.items() if int(n) > 0}
        total = sum(self.counts.values()) + alpha
        self._log_share = {form: math.log(n / total) for form, n in self.counts.items()}
        self._log_unseen = math.log(alpha / total / unseen_formats)
        self._by_length: dict[int, list[tuple[frozenset[str], ...]]] = {}
        for form in self.counts:
            self._by_length.setdefault(len(form), []).append(
                tuple(frozenset(DIGITS if c == "#" else LETTERS) for c in form))

    def __bool__(self) -> bool:
        return bool(self.counts)

    def log_prior(self, text: str) -> float:
        return self._log_share.get(plate_format(text), self._log_unseen)

    def variants(self, text: str) -> list[str]:
        """`text` with look-alikes swapped so that it fits each known format of its length."""
        found: dict[str, None] = {}
        for sets in self._by_length.get(len(text), ()):
            for fitted, swapped in _swaps(text, sets):
                if swapped:
                    found[fitted] = None
        return list(found)

    def rank(self, texts: Sequence[str], log_likelihoods: Sequence[float]) -> list[tuple[str, float]]:
        """`texts` with the reader's log likelihoods, ranked by likelihood times format share, each
        with its probability under the prior: the reader's mass on these texts, shared out again in
        proportion to likelihood times share."""
        if not texts:
            return []
        ll = np.asarray(log_likelihoods, np.float64)
        scores = ll + np.array([self.log_prior(t) for t in texts])
        mass = float(np.exp(ll).sum())
        posterior = np.exp(scores - scores.max())
        posterior *= mass / posterior.sum()
        order = np.argsort(-scores, kind="stable")
        return [(texts[i], float(posterior[i])) for i in order]


def formats_right(pairs: Sequence[tuple[str, Sequence[str], Sequence[float]]],
                  counts: dict[str, int]) -> tuple[int, int]:
    """Leave-one-out check of a `FormatPrior` from labelled plates' formats `counts`: for each
    (label, texts, log likelihoods) of a plate the reader read, whether the best text is the label
    without the prior and with a prior from every other plate's format. Returns (right without,
    right with)."""
    without = with_prior = 0
    for label, texts, ll in pairs:
        if not texts:
            continue
        without += texts[int(np.argmax(ll))] == label
        others = dict(counts)
        own = plate_format(label)
        if own in others:
            others[own] -= 1
        with_prior += FormatPrior(others).rank(texts, ll)[0][0] == label
    return without, with_prior
