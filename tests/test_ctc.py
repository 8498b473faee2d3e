"""CTC decoding: beam search probabilities and plate patterns."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from anprd.ctc import ALPHABET, BLANK, beam_search, greedy_decode, parse_pattern, pattern_beam_search
from anprd.ctc_fusion import ctc_log_likelihood


def _posteriors(rows: list[dict[str, float]]) -> np.ndarray:
    """T x 37 posteriors from per-column {symbol: prob}; '_' is the blank; the rest spread evenly."""
    out = np.zeros((len(rows), len(ALPHABET) + 1))
    for t, row in enumerate(rows):
        for sym, p in row.items():
            out[t, BLANK if sym == "_" else ALPHABET.index(sym)] = p
        rest = 1 - out[t].sum()
        out[t][out[t] == 0] = rest / (out[t] == 0).sum()
    return out


def test_greedy_merges_repeats_and_drops_blanks():
    probs = _posteriors([{"A": .9}, {"A": .9}, {"_": .9}, {"A": .9}, {"1": .9}, {"_": .9}])
    assert greedy_decode(probs) == "AA1"


def test_beam_probabilities_match_the_forward_algorithm():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(37, 0.05), size=12)
    for text, p in beam_search(probs, top_n=5, beam_width=64):
        assert math.log(p) == pytest.approx(ctc_log_likelihood(text, probs), abs=1e-6)


def test_beam_finds_the_most_probable_text_by_brute_force():
    """Small alphabet slice: enumerate every path of 5 columns over {A, B, blank}."""
    rng = np.random.default_rng(1)
    small = rng.dirichlet(np.ones(3), size=5)  # columns: A, B, blank
    probs = np.full((5, 37), 1e-9)
    probs[:, ALPHABET.index("A")], probs[:, ALPHABET.index("B")], probs[:, BLANK] = small.T
    totals: dict[str, float] = {}
    for path in itertools.product("AB_", repeat=5):
        p = np.prod([small[t, "AB_".index(s)] for t, s in enumerate(path)])
        text = "".join(k for k, _ in itertools.groupby(path) if k != "_")
        totals[text] = totals.get(text, 0) + p
    best = max((t for t in totals if t), key=totals.get)
    found, p = beam_search(probs, top_n=1, beam_width=64)[0]
    assert found == best and p == pytest.approx(totals[best], rel=1e-4)


def test_pattern_fixes_o_and_zero():
    # "AB12CDE" with the third character looking more like O than 0 ... UK pattern says digit
    cols = [{"A": .95}, {"_": .95}, {"B": .95}, {"_": .95}, {"O": .6, "0": .35}, {"_": .95},
            {"2": .95}, {"_": .95}, {"C": .95}, {"_": .95}, {"D": .95}, {"_": .95}, {"E": .95}]
    probs = _posteriors(cols)
    assert beam_search(probs)[0][0] == "ABO2CDE"
    fitted = pattern_beam_search(probs, parse_pattern("uk", "@@##@@@"))
    assert fitted is not None and fitted[0] == "AB02CDE"


def test_pattern_that_cannot_fit_returns_none():
    probs = _posteriors([{"A": .99}, {"_": .99}, {"B": .99}])
    assert pattern_beam_search(probs, parse_pattern("digits", "###")) is None


def test_bad_pattern_is_named():
    with pytest.raises(ValueError, match="uk"):
        parse_pattern("uk", "@@#!")
