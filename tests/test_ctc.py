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


def _one_by_one_beam(log_probs: np.ndarray, beam_width: int, allowed, prune: float
                     ) -> list[tuple[str, float]]:
    """Prefix beam search written out extension by extension (how `anprd.ctc` did it before it
    scored a column's extensions as one array): the reference the array version must agree with."""
    def add(a: float, b: float) -> float:
        return float(np.logaddexp(a, b))

    beams = {(): (0.0, -math.inf)}
    for row in log_probs.astype(np.float64):
        nxt: dict[tuple[int, ...], list[float]] = {}
        for prefix, (pb, pnb) in beams.items():
            total = add(pb, pnb)
            entry = nxt.setdefault(prefix, [-math.inf, -math.inf])
            entry[0] = add(entry[0], total + row[BLANK])
            if prefix:
                entry[1] = add(entry[1], pnb + row[prefix[-1]])
            for k in range(BLANK):
                if row[k] > prune and k in allowed(len(prefix)):
                    extended = nxt.setdefault(prefix + (k,), [-math.inf, -math.inf])
                    extended[1] = add(extended[1], (pb if prefix and prefix[-1] == k else total) + row[k])
        best = sorted(nxt.items(), key=lambda kv: -add(*kv[1]))[:beam_width]
        beams = {p: (v[0], v[1]) for p, v in best}
    found = [("".join(ALPHABET[k] for k in p), add(*v)) for p, v in beams.items()]
    return sorted(found, key=lambda r: -r[1])


@pytest.mark.parametrize("seed", range(6))
def test_the_array_beam_search_finds_what_one_by_one_search_finds(seed):
    from anprd.ctc import ANY_IDS, _prefix_beam

    rng = np.random.default_rng(seed)
    uk = parse_pattern("uk", "@@##@@@")
    for _ in range(20):
        logits = rng.normal(0, 3, (int(rng.integers(4, 33)), 37))
        logits[:, BLANK] += rng.uniform(0, 6)  # mostly blank columns, as a reader's are
        log_probs = np.log(np.clip(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 1e-12, 1))
        for allowed in (lambda _: ANY_IDS,
                        lambda n: uk.classes[n] if n < len(uk.classes) else frozenset()):
            expected = _one_by_one_beam(log_probs, 16, allowed, math.log(1e-4))
            got = _prefix_beam(log_probs, 16, allowed, None, math.log(1e-4))
            assert [t for t, _ in got] == [t for t, _ in expected]
            assert [p for _, p in got] == pytest.approx([p for _, p in expected], abs=1e-9)
