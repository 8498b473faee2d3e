"""Procedural plate fonts: TrueType files drawn from stroke skeletons with real plate glyph variants.

Why: the generator's 16 fonts are generic condensed sans faces. Real plate lettering draws several
characters differently, and a reader trained only on the generic shapes fails on them (2026-12 review of
real French, Brazilian and UK plates): a bare-bar 1 with no flag was read as I, the Brazilian
rounded-rectangle O was mixed up with 0 and D, narrow W read as N/H/V/M, a short-tailed Q as O/0.
No genuine plate font can be installed or bundled (/work/shared/PLATES.md), so this module draws a
"baton"/DIN-like plate lettering from lines and arcs and writes real .ttf files that `train.gen`
renders with Pillow unchanged.

What varies (sources are the keys in PLATES.md, "Glyph variants that matter"):
  * stroke width, letter and digit widths (narrow "Engschrift" to normal), corner roundness (sharp
    rounded rectangles to ovals), side bearings, square or round stroke ends, proportional or
    monospaced widths;
  * one variant per character per font: 1 bare bar / flag / flag+foot, I bar / serifs, 0 oval / narrow
    rounded rectangle / slashed / dotted / FE slit / same glyph as O, O oval / rounded rectangle,
    D with UK spurs, Q tails, narrow W with a high or low middle apex, M vertex depth and splay, K leg
    off the arm (FE) or the stem, B squared or round, 8 round or stacked, 4 closed / open / open-top
    (California), 7 straight or kinked, 6/9 straight or curved stems, G spur, Z crossed, ...
    [G1] FE-Schrift look-alikes, [G2] UKNumberPlate, [U2] UK character sizes, [B2] Brazil widths,
    [D11] FE 0 slit, [US9] California open-top 4;
  * families that bundle these the way real plate typefaces do (`FAMILIES`, `random_style`).

How: each glyph is a list of stroke skeletons (polylines, arcs of ovals or rounded rectangles) that
are rasterised at high resolution with OpenCV, clipped to the cap band (so diagonal ends are cut flat
as on plates), traced with `cv2.findContours`, simplified and written with fontTools' `TTGlyphPen`,
outer contours clockwise and counters anticlockwise, so counters stay hollow under nonzero winding.

    python -m train.plate_fonts --out data/plate-fonts --count 24 --seed 5 [--sheet sheet.png]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "BUILDER_VERSION",
    "CHARSET",
    "FAMILIES",
    "VARIANTS",
    "PlateFontStyle",
    "build_font",
    "build_plate_fonts",
    "contact_sheet",
    "main",
    "random_style",
]

BUILDER_VERSION = 1  # bump when a drawing changes: cached font folders are rebuilt
CHARSET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
FAMILIES = ("fe", "uk", "mandatory", "din", "us", "fr", "any")

UPM, CAP, ASCENT, DESCENT = 1000, 700, 800, -200
SCALE = 0.5  # raster pixels per font unit: a 350 px cap height, contours good to ~2 units
MARGIN = 160  # font units of raster around the glyph box (Q tails, spurs, square caps)
_EPOCH = 3786912000  # 2024-01-01 in the font format's seconds since 1904

# Every variant a character can take; the first is the plain default.
VARIANTS: dict[str, tuple[str, ...]] = {
    "1": ("flag", "bar", "flag_foot"),
    "I": ("bar", "serif"),
    "0": ("oval", "rrect", "slashed", "dotted", "slit", "same_as_O"),
    "O": ("oval", "rrect"),
    "D": ("plain", "spurs"),
    "Q": ("long", "short", "inside"),
    "W": ("wide", "narrow_high", "narrow_low"),
    "M": ("low", "mid", "low_splay", "mid_splay"),
    "N": ("plain", "inset"),
    "K": ("stem", "arm"),
    "R": ("mid", "stem"),
    "B": ("flat", "round", "spurs"),
    "8": ("round", "stacked"),
    "4": ("closed", "open", "vertical"),
    "7": ("straight", "kinked"),
    "6": ("curved", "straight"),
    "9": ("curved", "straight"),
    "G": ("plain", "spur"),
    "5": ("round", "square"),
    "3": ("round", "flat"),
    "Z": ("plain", "crossed"),
    "J": ("hook", "bar"),
}

# Per family: the variants real lettering of that kind uses (a char not listed takes any of its variants).
_FAMILY_VARIANTS: dict[str, dict[str, tuple[str, ...]]] = {
    # German FE-Schrift [G1][D11]: slit narrow 0, round O, 1 flag+foot, serif I, squared B, round 8,
    # square 5, low W/M middles, K leg off the arm, straight 6/9 stems, G spur, open 4, kinked 7
    "fe": {"0": ("slit",), "O": ("oval",), "1": ("flag_foot",), "I": ("serif",), "B": ("flat",),
           "8": ("round",), "5": ("square",), "W": ("narrow_low",), "M": ("mid",), "K": ("arm",),
           "6": ("straight",), "9": ("straight",), "G": ("spur",), "4": ("open",), "7": ("kinked",),
           "Q": ("inside",), "D": ("plain",), "Z": ("plain",), "N": ("plain",), "R": ("mid",),
           "3": ("round",), "J": ("hook",)},
    # UK Charles Wright-like [G2][U2]: bar 1 and I, O = 0 rounded rectangle, D and B spurs, closed 4
    "uk": {"1": ("bar",), "I": ("bar",), "O": ("rrect",), "0": ("same_as_O",), "D": ("spurs",),
           "B": ("spurs",), "4": ("closed",), "W": ("wide", "narrow_high"), "M": ("low",),
           "K": ("stem",), "6": ("curved",), "9": ("curved",), "7": ("straight",), "8": ("stacked",),
           "Q": ("long", "short"), "Z": ("plain",), "N": ("plain",), "3": ("round",), "J": ("hook",)},
    # Brazil grey plates, Mandatory [B2][U7]: rounded-rectangle O, sharp narrow W and M middles,
    # short Q tail, 1 a bar with a flag, proportional widths
    "mandatory": {"O": ("rrect",), "0": ("same_as_O", "rrect"), "1": ("flag",), "I": ("bar",),
                  "W": ("narrow_high", "narrow_low"), "M": ("low", "mid"), "Q": ("short",),
                  "D": ("plain",), "B": ("flat",), "4": ("closed",), "7": ("straight",),
                  "K": ("stem",), "6": ("curved",), "9": ("curved",), "8": ("stacked",), "Z": ("plain",),
                  "N": ("plain",), "J": ("hook",)},
    # DIN 1451-like (Poland, Netherlands look-alikes, Mercosur): flag 1, bar I, stadium 0
    "din": {"1": ("flag",), "I": ("bar",), "0": ("rrect",), "O": ("oval", "rrect"), "Q": ("long",),
            "W": ("wide", "narrow_high"), "M": ("low", "low_splay"), "K": ("stem",), "4": ("closed",),
            "7": ("straight",), "6": ("curved",), "9": ("curved",), "B": ("flat",), "D": ("plain",),
            "Z": ("plain",), "G": ("plain", "spur"), "5": ("round",), "3": ("round",), "N": ("plain",),
            "J": ("hook",)},
    # US dies [US2][US9]: narrow, monospaced, oval curves, open-top 4 option, serif I
    "us": {"0": ("oval", "slashed", "dotted"), "O": ("oval",), "1": ("flag", "flag_foot"),
           "I": ("serif",), "4": ("vertical", "closed"), "W": ("narrow_high", "narrow_low"),
           "M": ("low", "mid"), "7": ("straight",), "6": ("curved",), "9": ("curved",),
           "K": ("stem",), "D": ("plain",), "B": ("flat", "round"), "Z": ("plain",), "J": ("hook", "bar")},
    # French "baton" [F1][F3][F7]: plain, closed shapes must stay closed
    "fr": {"0": ("oval", "rrect"), "O": ("oval", "rrect"), "1": ("flag", "bar"), "I": ("bar",),
           "4": ("closed",), "B": ("flat", "round"), "D": ("plain",), "Q": ("long", "short"),
           "W": ("wide", "narrow_high"), "M": ("low", "low_splay"), "K": ("stem",), "7": ("straight",),
           "8": ("round", "stacked"), "Z": ("plain",), "N": ("plain",), "J": ("hook",)},
    "any": {},
}

# Natural widths relative to the base letter width; `proportional` blends them in (0: monospaced).
_REL_WIDTH = {"A": 1.14, "B": 1.0, "C": 1.0, "D": 1.02, "E": 0.9, "F": 0.88, "G": 1.04, "H": 1.0,
              "J": 0.9, "K": 1.0, "L": 0.86, "M": 1.22, "N": 1.0, "O": 1.06, "P": 0.98, "Q": 1.06,
              "R": 1.0, "S": 0.98, "T": 0.96, "U": 1.0, "V": 1.08, "W": 1.3, "X": 1.04, "Y": 1.04,
              "Z": 0.95}
_GLYPH_NAMES = {"-": "hyphen", " ": "space", **{d: n for d, n in zip(
    "0123456789", ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    strict=True)}}


# --------------------------------------------------------------------------------------------------
# Style
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlateFontStyle:
    """Everything one font's drawing depends on; lengths are fractions of the cap height."""

    family: str
    stroke: float  # stroke width
    letter_width: float  # base letter ink width
    digit_width: float  # digit ink width (digits are tabular)
    roundness: float  # corner radius of rounded rectangles, as a fraction of the largest possible
    oval_curves: bool  # C, G, S, U, J, 2, 3, 5, 6, 9 drawn from ovals instead of rounded rectangles
    spacing: float  # side bearing on each side
    round_ends: bool  # round stroke ends and joins instead of square cuts and mitres
    proportional: float  # 0: monospaced letters, 1: natural proportional widths
    narrow_bars: bool  # a bar-like 1 / I gets a narrow advance (UK, Brazil) instead of a full cell
    mid: float  # height of the middle bars (E, F, H, B waist ...)
    variants: tuple[tuple[str, str], ...]  # (char, variant name), sorted by char

    def variant(self, char: str) -> str:
        return dict(self.variants).get(char, VARIANTS.get(char, ("plain",))[0])

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["variants"] = dict(self.variants)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PlateFontStyle:
        d = dict(d)
        d["variants"] = tuple(sorted(dict(d["variants"]).items()))
        return cls(**d)

    def with_variants(self, **changes: str) -> PlateFontStyle:
        """A copy with some characters' variants changed; digits as keyword names: `_1="bar"`."""
        v = dict(self.variants)
        for key, name in changes.items():
            char = key.lstrip("_")
            if name not in VARIANTS[char]:
                raise ValueError(f"unknown variant {name!r} for {char!r}")
            v[char] = name
        return dataclasses.replace(self, variants=tuple(sorted(v.items())))


def random_style(rng: np.random.Generator, family: str = "any") -> PlateFontStyle:
    """A random style of `family` (one of `FAMILIES`): the family fixes what its lettering must look
    like, the rest (exact widths, stroke, spacing, unlisted variants) is drawn at random."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")

    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    def coin(p: float = 0.5) -> bool:
        return bool(rng.random() < p)

    if family == "fe":  # Mittelschrift 47.5/44.5 of 75, Engschrift 40.5/38.5 [D5]
        lw = u(0.61, 0.65) if coin() else u(0.52, 0.56)
        p = dict(stroke=u(0.12, 0.145), letter_width=lw, digit_width=lw * 0.937, roundness=u(0.55, 0.8),
                 oval_curves=False, spacing=u(0.045, 0.075), round_ends=False, proportional=u(0.0, 0.2),
                 narrow_bars=coin(0.3))
    elif family == "uk":  # 79 high, 50 wide, 14 stroke, 11 gap [U2]
        lw = u(0.6, 0.66)
        p = dict(stroke=u(0.16, 0.185), letter_width=lw, digit_width=lw, roundness=u(0.45, 0.7),
                 oval_curves=False, spacing=u(0.06, 0.08), round_ends=False, proportional=0.0,
                 narrow_bars=True)
    elif family == "mandatory":  # 63 high: I 10, 1 18, A/M 54, digits 36-40 [B2]
        p = dict(stroke=u(0.14, 0.165), letter_width=u(0.64, 0.7), digit_width=u(0.57, 0.63),
                 roundness=u(0.35, 0.55), oval_curves=False, spacing=u(0.04, 0.065), round_ends=False,
                 proportional=1.0, narrow_bars=True)
    elif family == "din":
        lw = u(0.52, 0.64)
        p = dict(stroke=u(0.11, 0.15), letter_width=lw, digit_width=lw * u(0.9, 1.0), roundness=u(0.8, 1.0),
                 oval_curves=False, spacing=u(0.04, 0.07), round_ends=False, proportional=u(0.3, 0.7),
                 narrow_bars=True)
    elif family == "us":  # narrow monospaced dies with oval curves [US2]
        lw = u(0.45, 0.55)
        p = dict(stroke=u(0.13, 0.16), letter_width=lw, digit_width=lw, roundness=u(0.9, 1.0),
                 oval_curves=True, spacing=u(0.03, 0.06), round_ends=coin(0.5), proportional=0.0,
                 narrow_bars=False)
    elif family == "fr":
        lw = u(0.5, 0.64)
        p = dict(stroke=u(0.11, 0.16), letter_width=lw, digit_width=lw * u(0.9, 1.0), roundness=u(0.5, 1.0),
                 oval_curves=coin(0.4), spacing=u(0.04, 0.08), round_ends=coin(0.3), proportional=u(0.2, 0.8),
                 narrow_bars=True)
    else:
        p = dict(stroke=u(0.10, 0.19), letter_width=u(0.45, 0.68), digit_width=u(0.45, 0.68),
                 roundness=u(0.25, 1.0), oval_curves=coin(0.4), spacing=u(0.03, 0.09), round_ends=coin(0.4),
                 proportional=u(0.0, 1.0), narrow_bars=coin(0.6))
    allowed = _FAMILY_VARIANTS[family]
    variants = {}
    for char in sorted(VARIANTS):
        names = allowed.get(char, VARIANTS[char])
        variants[char] = names[int(rng.integers(len(names)))]
    p = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()}
    # thick strokes in narrow letters would close the counters: keep a counter >= ~1.4 strokes wide
    p["stroke"] = min(p["stroke"], math.floor(min(p["letter_width"], p["digit_width"]) / 3.4 * 1e4) / 1e4)
    return PlateFontStyle(family=family, mid=round(u(0.48, 0.54), 4),
                          variants=tuple(sorted(variants.items())), **p)


# --------------------------------------------------------------------------------------------------
# Skeleton geometry
# --------------------------------------------------------------------------------------------------
class _Shape:
    """A convex closed centreline (rounded rectangle, stadium or ellipse) sampled densely, so that open
    curves (C, S, 2, ...) can be cut from it by angle: 0 deg is the right middle, 90 the top (anticlockwise;
    angles are normalised by the half sizes, so 45 deg always points at the top-right corner)."""

    def __init__(self, x0: float, y0: float, x1: float, y1: float,
                 radii: Sequence[tuple[float, float]]) -> None:
        # radii: (rx, ry) per corner in the order top-right, top-left, bottom-left, bottom-right
        self.cx, self.cy = (x0 + x1) / 2, (y0 + y1) / 2
        self.hw, self.hh = max((x1 - x0) / 2, 1e-3), max((y1 - y0) / 2, 1e-3)
        corners = ((x1, y1, 0), (x0, y1, 90), (x0, y0, 180), (x1, y0, 270))
        pts: list[tuple[float, float]] = []
        for (cx, cy, a0), (rx, ry) in zip(corners, radii, strict=True):
            rx, ry = min(max(rx, 0.0), 2 * self.hw), min(max(ry, 0.0), 2 * self.hh)
            sx = -1 if cx == x1 else 1
            sy = -1 if cy == y1 else 1
            ox, oy = cx + sx * rx, cy + sy * ry  # the corner arc's centre
            for k in range(25):
                a = math.radians(a0 + 90 * k / 24)
                pts.append((ox + rx * math.cos(a), oy + ry * math.sin(a)))
        poly = np.array(pts + [pts[0]])
        # resample uniformly (straight edges need points too, for cutting by angle)
        seg = np.hypot(*np.diff(poly, axis=0).T)
        dist = np.concatenate([[0], np.cumsum(seg)])
        n = max(64, int(dist[-1] / 3))
        s = np.linspace(0, dist[-1], n, endpoint=False)
        xy = np.stack([np.interp(s, dist, poly[:, 0]), np.interp(s, dist, poly[:, 1])], axis=1)
        ang = np.degrees(np.arctan2((xy[:, 1] - self.cy) / self.hh, (xy[:, 0] - self.cx) / self.hw)) % 360
        order = np.argsort(ang, kind="stable")
        self.pts, self.ang = xy[order], ang[order]

    def full(self) -> np.ndarray:
        return self.pts

    def at(self, deg: float) -> np.ndarray:
        i = int(np.argmin(np.abs((self.ang - deg % 360 + 180) % 360 - 180)))
        return self.pts[i]

    def arc(self, a0: float, a1: float) -> np.ndarray:
        """Points from angle a0 to a1: anticlockwise if a1 > a0, else clockwise."""
        lo, hi = (a0, a1) if a1 >= a0 else (a1, a0)
        start = lo % 360
        ang = np.concatenate([self.ang, self.ang + 360, self.ang + 720])
        pts = np.concatenate([self.pts, self.pts, self.pts])
        keep = (ang >= start) & (ang <= start + (hi - lo))
        out = np.concatenate([[self.at(lo)], pts[keep], [self.at(hi)]])
        return out if a1 >= a0 else out[::-1]


@dataclass
class _Stroke:
    pts: np.ndarray
    closed: bool
    width: float
    clip: bool  # clipped to the cap band (False: Q's tail may dip below the baseline)
    caps: tuple[str, str]  # "auto", "square", "round" or "butt" for the start and the end


class _Sketch:
    """The strokes of one glyph inside an ink box [0, w] x [0, CAP] (y up)."""

    def __init__(self, style: PlateFontStyle, w: float) -> None:
        self.style, self.w = style, float(w)
        self.t = style.stroke * CAP
        self.h = self.t / 2
        self.strokes: list[_Stroke] = []
        self.dots: list[tuple[float, float, float, float]] = []
        self.cuts: list[tuple[np.ndarray, np.ndarray, float]] = []
        # centrelines of the outermost strokes: ink then just touches the box
        self.xl, self.xr, self.yb, self.yt = self.h, self.w - self.h, self.h, CAP - self.h

    def line(self, *pts: Sequence[float], width: float = 1.0, clip: bool = True,
             caps: tuple[str, str] = ("auto", "auto")) -> None:
        arr = _dedupe(np.asarray(np.concatenate([np.atleast_2d(p) for p in pts]), float))
        if len(arr) >= 2:
            self.strokes.append(_Stroke(arr, False, self.t * width, clip, caps))

    def loop(self, pts: np.ndarray, width: float = 1.0) -> None:
        self.strokes.append(_Stroke(_dedupe(np.asarray(pts, float)), True, self.t * width, True,
                                    ("butt", "butt")))

    def cut(self, p0: Sequence[float], p1: Sequence[float], width: float) -> None:
        """Erase a straight band `width` wide after the strokes are drawn (slits)."""
        self.cuts.append((np.asarray(p0, float), np.asarray(p1, float), float(width)))

    def dot(self, cx: float, cy: float, rx: float, ry: float) -> None:
        self.dots.append((cx, cy, rx, ry))

    def shape(self, x0: float, y0: float, x1: float, y1: float, corners: str = "1111",
              oval: bool | None = None, reach: float = 1.0, rscale: float = 1.0) -> _Shape:
        """A rounded rectangle (or oval) centreline in the style; `corners` flags TR, TL, BL, BR as
        round (1) or sharp (0); `reach` is how far across the width one corner may curve (1: half)."""
        oval = self.style.oval_curves if oval is None else oval
        hw, hh = (x1 - x0) / 2, (y1 - y0) / 2
        if oval:
            rx, ry = hw * reach, hh
        else:
            rx = ry = min(1.0, self.style.roundness * rscale) * min(hw * reach, hh)
        radii = []
        for i, c in enumerate(corners):  # two round corners on one side share that side's length
            row_mate, col_mate = corners[i ^ 1], corners[3 - i]
            lim_x, lim_y = (hw if row_mate == "1" else 2 * hw), (hh if col_mate == "1" else 2 * hh)
            radii.append((min(rx, lim_x), min(ry, lim_y)) if c == "1" else (0.0, 0.0))
        return _Shape(x0, y0, x1, y1, radii)

    def rotate180(self) -> None:
        """Turn the drawing upside down inside its box (9 from 6)."""
        for s in self.strokes:
            s.pts = np.stack([self.w - s.pts[:, 0], CAP - s.pts[:, 1]], axis=1)
        self.cuts = [(np.array([self.w, CAP]) - a, np.array([self.w, CAP]) - b, wd) for a, b, wd in self.cuts]
        self.dots = [(self.w - x, CAP - y, rx, ry) for x, y, rx, ry in self.dots]


def _dedupe(pts: np.ndarray) -> np.ndarray:
    if len(pts) < 2:
        return pts
    keep = np.concatenate([[True], np.hypot(*np.diff(pts, axis=0).T) > 1e-6])
    return pts[keep]


# --------------------------------------------------------------------------------------------------
# Glyph drawings
# --------------------------------------------------------------------------------------------------
def _width(style: PlateFontStyle, char: str) -> tuple[float, float]:
    """(ink width, cell width) in font units. The cell is the ink box the advance is built around:
    monospaced styles centre narrow glyphs (bar 1, I) in a full cell."""
    t = style.stroke * CAP
    v = style.variant(char)
    if char.isdigit():
        cell = style.digit_width * CAP
    elif char == "-":
        return 0.36 * CAP, 0.36 * CAP
    else:
        rel = _REL_WIDTH.get(char, 1.0)
        cell = style.letter_width * CAP * (1 + style.proportional * (rel - 1))
        if char == "W" and v != "wide":  # narrow plate W: about as wide as the other letters
            cell = style.letter_width * CAP * (1 + 0.08 * style.proportional)
        elif char == "W":  # a wide W is wide even in monospaced lettering
            cell = max(cell, 1.28 * style.letter_width * CAP)
    if char in "I1":
        if v == "bar":
            ink = t
        elif v == "serif":
            ink = max(0.42 * style.letter_width * CAP, 2.6 * t)
        elif v == "flag":
            ink = min(t + 0.2 * CAP, cell)
        else:  # flag_foot: the foot sets the width
            ink = min(max(0.62 * cell, t + 0.22 * CAP), cell)
        return ink, (ink if style.narrow_bars else max(cell, ink))
    if char == "0" and v == "rrect":
        cell_ink = cell * 0.92  # FE/DIN zeros are narrower than the O
        return cell_ink, cell
    if char == "0" and v == "slit":
        return cell * 0.92, cell
    return cell, cell


def _draw(style: PlateFontStyle, char: str) -> _Sketch:
    """The skeleton of `char` in `style` (see the module docstring for the variants)."""
    if char == "0" and style.variant("0") == "same_as_O":
        return _draw(style, "O")
    w, _ = _width(style, char)
    s = _Sketch(style, w)
    xl, xr, yb, yt, t, h = s.xl, s.xr, s.yb, s.yt, s.t, s.h
    v = style.variant(char)
    cx = w / 2
    mid = style.mid * CAP
    mid_c = mid  # centreline of middle bars

    def ring(x0: float, x1: float, kind: str) -> _Shape:  # O-like closed shapes
        if kind == "oval":
            return s.shape(x0, yb, x1, yt, oval=True)
        return s.shape(x0, yb, x1, yt, oval=False)

    if char == "A":
        ya = 0.3 * CAP
        s.line((xl, yb), (cx, CAP), (xr, yb))
        f = (ya - yb) / (CAP - yb)
        s.line((xl + (cx - xl) * f, ya), (xr - (xr - cx) * f, ya), caps=("butt", "butt"))
    elif char == "B":
        xs = xl + (0.55 * t if v == "spurs" else 0)
        left = "0" if v != "round" else "1"
        upper = s.shape(xs, mid_c, xr - 0.07 * w, yt, corners="1" + left + "01", oval=False,
                        reach=1.5, rscale=1.0 if v != "flat" else 0.8)
        lower = s.shape(xs, yb, xr, mid_c, corners="10" + left + "1", oval=False, reach=1.5,
                        rscale=1.0 if v != "flat" else 0.8)
        if v == "round":  # small round left corners, the stem still straight
            upper = _Shape(xs, mid_c, xr - 0.07 * w, yt, _corner_mix(upper, s, 0.35))
            lower = _Shape(xs, yb, xr, mid_c, _corner_mix(lower, s, 0.35, bottom=True))
        s.loop(upper.full())
        s.loop(lower.full())
        if v == "spurs":
            s.line((xl - 0.1 * t, yt), (xs, yt), caps=("square", "butt"))
            s.line((xl - 0.1 * t, yb), (xs, yb), caps=("square", "butt"))
    elif char == "C":
        s.line(s.shape(xl, yb, xr, yt).arc(42, 318))
    elif char == "D":
        xs = xl + (0.55 * t if v == "spurs" else 0)
        s.loop(s.shape(xs, yb, xr, yt, corners="1001", oval=False, reach=1.6).full())
        if v == "spurs":  # UK: the top and bottom bars stick out left of the stem [G2]
            s.line((xl - 0.1 * t, yt), (xs, yt), caps=("square", "butt"))
            s.line((xl - 0.1 * t, yb), (xs, yb), caps=("square", "butt"))
    elif char == "E":
        s.line((xr, yt), (xl, yt), (xl, yb), (xr, yb))
        s.line((xl, mid_c), (xr - 0.1 * w, mid_c), caps=("butt", "auto"))
    elif char == "F":
        s.line((xr, yt), (xl, yt), (xl, yb))
        s.line((xl, mid_c - 0.02 * CAP), (xr - 0.12 * w, mid_c - 0.02 * CAP), caps=("butt", "auto"))
    elif char == "G":
        shp = s.shape(xl, yb, xr, yt)
        yg = 0.46 * CAP
        if v == "spur":  # FE: square lower right corner, the right stem runs down to the baseline
            s.line(shp.arc(40, 270), (xr, yb), (xr, yg), (0.55 * w, yg))
        else:
            arc = shp.arc(40, 345)
            s.line(arc, (xr, max(yg, arc[-1][1])), (0.55 * w, max(yg, arc[-1][1])))
    elif char == "H":
        s.line((xl, yt), (xl, yb))
        s.line((xr, yt), (xr, yb))
        s.line((xl, mid_c), (xr, mid_c), caps=("butt", "butt"))
    elif char == "I":
        s.line((cx, yt), (cx, yb))
        if v == "serif":
            s.line((xl, yt), (xr, yt))
            s.line((xl, yb), (xr, yb))
    elif char == "J":
        bowl = s.shape(xl, yb, xr, yb + 0.55 * CAP, corners="1111")
        s.line((xr, yt), bowl.arc(0, -162))
        if v == "bar":  # a top bar over the stem (US dies)
            s.line((xr - 0.55 * w, yt), (xr, yt), caps=("auto", "butt"))
    elif char == "K":
        if v == "arm":  # FE: the leg branches off the arm, not the stem [G1]
            s.line((xl, yt), (xl, yb))
            j = np.array([xl + h * 0.5, 0.33 * CAP])
            top = np.array([xr, yt])
            s.line(top, j, caps=("auto", "butt"))
            b = j + (top - j) * 0.4
            s.line(b, (xr, yb), caps=("butt", "auto"))
        else:
            s.line((xl, yt), (xl, yb))
            j = (xl + 0.5 * h, 0.42 * CAP)
            s.line((xr, yt), j, caps=("auto", "butt"))
            s.line(j, (xr, yb), caps=("butt", "auto"))
    elif char == "L":
        s.line((xl, yt), (xl, yb), (xr, yb))
    elif char == "M":
        vy = yb if v.startswith("low") else 0.44 * CAP
        sp = 0.07 * w if v.endswith("splay") else 0.0
        s.line((xl, yb), (xl + sp, yt))
        s.line((xr, yb), (xr - sp, yt))
        s.line((xl + sp, yt), (cx, vy), (xr - sp, yt), width=0.74)  # thinner middle, as plate fonts
    elif char == "N":
        if v == "inset":  # full stems, the diagonal meets them inside
            s.line((xl, yt), (xl, yb))
            s.line((xr, yt), (xr, yb))
            s.line((xl, yt - 0.06 * CAP), (xr, yb + 0.06 * CAP), width=0.9, caps=("butt", "butt"))
        else:
            s.line((xl, yb), (xl, yt), (xr, yb), (xr, yt))
    elif char == "O":
        s.loop(ring(xl, xr, v).full())
    elif char == "P":
        yp = 0.44 * CAP
        s.loop(s.shape(xl, yp, xr, yt, corners="1001", oval=False, reach=1.5).full())
        s.line((xl, yp), (xl, yb), caps=("butt", "auto"))
    elif char == "Q":
        shp = ring(xl, xr, style.variant("O"))
        s.loop(shp.full())
        p = shp.at(-50)  # where the tail crosses the ring, lower right
        d = np.array([0.6, -0.8])  # a steep tail, down and right
        reach = max(0.0, min(0.16 * CAP, 1.1 * (shp.hw - t)))  # how far into the counter it may start
        if v == "short":  # Mandatory thins and shortens it [U7]: a nick through the lower right
            s.line(p - d * 0.3 * t, p + d * 0.17 * CAP, clip=False, width=0.85)
        elif v == "long":
            s.line(p - d * 0.5 * reach, p + d * 0.3 * CAP, clip=False)
        else:  # FE: starts inside the counter, runs out right of the bowl onto the baseline [G1]
            end = np.array([xr + 0.3 * t, 0.0])
            d = (end - p) / np.hypot(*(end - p))
            s.line(p - d * max(1.1 * t, reach), end, caps=("butt", "auto"))
    elif char == "R":
        yp = 0.44 * CAP
        s.loop(s.shape(xl, yp, xr, yt, corners="1001", oval=False, reach=1.5).full())
        s.line((xl, yp), (xl, yb), caps=("butt", "auto"))
        x0 = xl + 0.5 * h if v == "stem" else 0.5 * w
        s.line((x0, yp), (xr, yb), caps=("butt", "auto"))
    elif char == "S":
        ys = 0.52 * CAP
        up = s.shape(xl + 0.04 * w, ys, xr - 0.04 * w, yt)
        lo = s.shape(xl, yb, xr, ys)
        s.line(up.arc(28, 270), lo.arc(90, -152))
    elif char == "T":
        s.line((xl, yt), (xr, yt))
        s.line((cx, yt), (cx, yb), caps=("butt", "auto"))
    elif char == "U":
        bowl = s.shape(xl, yb, xr, yb + 0.6 * CAP)
        s.line((xl, yt), bowl.arc(180, 360), (xr, yt))
    elif char == "V":
        s.line((xl, yt), (cx, yb), (xr, yt))
    elif char == "W":
        ya = yt if v in ("wide", "narrow_high") else 0.5 * CAP
        a, b = (0.24, 0.76) if v == "wide" else (0.26, 0.74)
        outer = 1.0 if v == "wide" else 0.92
        s.line((xl, yt), (a * w, yb), width=outer)
        s.line((xr, yt), (b * w, yb), width=outer)
        s.line((a * w, yb), (cx, ya), (b * w, yb), width=0.72)  # thinner middle keeps the counters open
    elif char == "X":
        s.line((xl, yt), (xr, yb))
        s.line((xl, yb), (xr, yt))
    elif char == "Y":
        yj = 0.44 * CAP
        s.line((xl, yt), (cx, yj), (xr, yt))
        s.line((cx, yj), (cx, yb), caps=("butt", "auto"))
    elif char == "Z":
        s.line((xl, yt), (xr, yt), (xl, yb), (xr, yb))
        if v == "crossed":
            s.line((0.2 * w, CAP / 2), (0.8 * w, CAP / 2), width=0.8)
    elif char == "0":
        if v == "oval":
            s.loop(ring(xl, xr, "oval").full())
        elif v == "rrect":
            s.loop(s.shape(xl, yb, xr, yt, oval=False, rscale=1.15).full())
        elif v in ("slashed", "dotted"):
            shp = ring(xl, xr, "oval" if style.oval_curves else "rrect")
            s.loop(shp.full())
            if v == "slashed":
                s.line(shp.at(238), shp.at(58), width=0.75, caps=("butt", "butt"))
            else:
                s.dot(cx, CAP / 2, 0.5 * t, 0.65 * t)
        else:  # FE slit: a thin cut through the ring at the top right [D11]
            shp = s.shape(xl, yb, xr, yt, oval=False, rscale=1.15)
            s.loop(shp.full())
            p = shp.at(50)
            d = np.array([0.7071, 0.7071])  # a diagonal cut, square to the ring at its corner
            s.cut(p - d * 1.2 * t, p + d * 1.2 * t, 0.36 * t)
    elif char == "1":
        if v == "bar":
            s.line((cx, yt), (cx, yb))
        else:
            xs = xr if v == "flag" else cx + 0.1 * w
            fl = min(0.2 * CAP, xs - xl)
            s.line((xs - fl, yt - 0.2 * CAP), (xs, CAP), (xs, yb))
            if v == "flag_foot":
                s.line((xl, yb), (xr, yb))
    elif char == "2":
        up = s.shape(xl, 0.42 * CAP, xr, yt)
        s.line(up.arc(165, -38), (xl, yb), (xr, yb))
    elif char == "3":
        m3 = 0.54 * CAP
        lo = s.shape(xl, yb, xr, m3)
        if v == "flat":  # flat top, a diagonal down to the middle
            s.line((xl, yt), (xr, yt), (0.42 * w, m3 + 0.02 * CAP), lo.at(100), caps=("auto", "butt"))
            s.line(lo.arc(100, -152))
        else:
            up = s.shape(xl + 0.06 * w, m3, xr - 0.04 * w, yt)
            s.line(up.arc(152, -112))
            s.line(lo.arc(112, -152))
    elif char == "4":
        yc = 0.3 * CAP
        xs = 0.72 * w
        if v != "closed":
            s.line((xl, yc), (xr, yc))
        if v == "closed":
            s.line((xs, yb), (xs, CAP), (xl, yc), (xr, yc))
        elif v == "open":  # FE: the diagonal does not meet the stem at the top [G1]
            s.line((xs, yb), (xs, yt))
            s.line((xs - 1.25 * t, CAP), (xl, yc), caps=("auto", "butt"))
        else:  # California open-top 4: a short vertical left arm [US9]
            s.line((xl, yt), (xl, yc), caps=("auto", "butt"))
            s.line((xs, yb), (xs, yt * 0.9 + 0.1 * yc))
    elif char == "5":
        y5 = 0.58 * CAP
        x5 = xl + 0.05 * w
        bowl = s.shape(xl, yb, xr, y5, oval=(v == "round") or None)
        if v == "square":  # FE: flat top, square bowl [G1]
            bowl = s.shape(xl, yb, xr, y5, oval=False, rscale=0.7)
        s.line((xr, yt), (x5, yt), (x5, y5), bowl.arc(118, -150))
    elif char in "69":
        y6 = 0.6 * CAP
        bowl = s.shape(xl, yb, xr, y6)
        s.loop(bowl.full())
        if v == "straight":  # FE: a straight diagonal stem [G1]
            s.line((xr - 0.08 * w, CAP), bowl.at(155), caps=("auto", "butt"))
        else:
            big = s.shape(xl, yb, xr, yt)
            s.line(big.arc(48, 180), (xl, bowl.cy), caps=("auto", "butt"))
        if char == "9":
            s.rotate180()
    elif char == "7":
        if v == "kinked":  # FE: the diagonal turns into a vertical stem [G1]
            s.line((xl, yt), (xr, yt), (0.45 * w, 0.42 * CAP), (0.45 * w, yb))
        else:
            s.line((xl, yt), (xr, yt), (0.3 * w, yb))
    elif char == "8":
        y8 = 0.53 * CAP
        if v == "round":
            s.loop(s.shape(xl + 0.06 * w, y8, xr - 0.06 * w, yt, oval=True).full())
            s.loop(s.shape(xl, yb, xr, y8, oval=True).full())
        else:
            s.loop(s.shape(xl + 0.04 * w, y8, xr - 0.04 * w, yt, oval=False).full())
            s.loop(s.shape(xl, yb, xr, y8, oval=False).full())
    elif char == "-":
        s.line((xl, 0.46 * CAP), (xr, 0.46 * CAP), caps=("square", "square"))
    else:
        raise ValueError(f"no drawing for {char!r}")
    return s


def _corner_mix(shape: _Shape, s: _Sketch, frac: float, bottom: bool = False) -> list[tuple[float, float]]:
    """Radii for a B bowl whose left outer corner is rounded by `frac` of the bowl height."""
    r = shape.hh * 2 * frac
    rr = s.style.roundness * min(shape.hw * 1.5, shape.hh)
    if bottom:
        return [(rr, rr), (0, 0), (r, r), (rr, rr)]
    return [(rr, rr), (r, r), (0, 0), (rr, rr)]


# --------------------------------------------------------------------------------------------------
# Rasterising and tracing
# --------------------------------------------------------------------------------------------------
def _to_px(pts: np.ndarray) -> np.ndarray:
    """Font units (y up) to raster pixels (y down), fixed point with 4 fractional bits."""
    x = (pts[:, 0] + MARGIN) * SCALE
    y = (CAP + MARGIN - pts[:, 1]) * SCALE
    return np.round(np.stack([x, y], axis=1) * 16).astype(np.int32)


def _poly(img: np.ndarray, pts: Iterable[Sequence[float]]) -> None:
    cv2.fillConvexPoly(img, _to_px(np.asarray(list(pts), float)), 255, cv2.LINE_AA, shift=4)


def _disc(img: np.ndarray, p: np.ndarray, r: float) -> None:
    c = _to_px(np.asarray([p], float))[0]
    cv2.circle(img, (int(c[0]), int(c[1])), int(round(r * SCALE * 16)), 255, -1, cv2.LINE_AA, shift=4)


def _stroke(img: np.ndarray, st: _Stroke, round_ends: bool) -> None:
    """Fill one stroke: a quad per segment, mitred (or round) joins, caps at open ends."""
    pts = st.pts.copy()
    h = st.width / 2 + 0.5 / SCALE  # tracing at pixel centres shaves ~half a pixel off each edge
    if len(pts) < 2:
        return
    if not st.closed:
        for end in (0, 1):
            i, j = (0, 1) if end == 0 else (-1, -2)
            d = pts[i] - pts[j]
            d /= np.hypot(*d)
            cap = st.caps[end]
            if cap == "auto":
                cap = "round" if round_ends else "square"
                at_edge = (pts[i][1] <= h + 1 and d[1] < -0.2) or (pts[i][1] >= CAP - h - 1 and d[1] > 0.2)
                if st.clip and at_edge and not round_ends:
                    pts[i] = pts[i] + d * min(4 * h, 2 * h / abs(d[1]))  # cut flat by the band clip
                    continue
            if cap == "square":
                pts[i] = pts[i] + d * h
            elif cap == "round":
                _disc(img, pts[i], h)
    n = len(pts)
    segs = [(pts[k], pts[(k + 1) % n]) for k in range(n if st.closed else n - 1)]
    normals = []
    for a, b in segs:
        d = b - a
        ln = np.hypot(*d)
        if ln < 1e-9:
            normals.append(None)
            continue
        nrm = np.array([-d[1], d[0]]) / ln
        normals.append((d / ln, nrm))
        _poly(img, [a + nrm * h, b + nrm * h, b - nrm * h, a - nrm * h])
    joins = range(n) if st.closed else range(1, n - 1)
    for k in joins:
        prev, nxt = normals[k - 1], normals[k % len(normals)]
        if prev is None or nxt is None:
            continue
        v = pts[k]
        (d1, n1), (d2, n2) = prev, nxt
        if round_ends and float(d1 @ d2) < 0.94:  # a real corner (> ~20 deg); curves keep thin mitres, so
            _disc(img, v, h)  # a disc cannot spill past a butt end next to it (the FE slit)
            continue
        cross = d1[0] * d2[1] - d1[1] * d2[0]
        if abs(cross) < 1e-9:
            continue
        sgn = -1.0 if cross > 0 else 1.0  # the outer side of the turn
        a, b = v + sgn * h * n1, v + sgn * h * n2
        denom = 1 + float(n1 @ n2)
        miter = v + sgn * h * (n1 + n2) / max(denom, 1e-9)
        ratio = np.hypot(*(miter - v)) / h
        outside = miter[1] > CAP or miter[1] < 0  # the band clip will cut a long spike flat anyway
        if ratio <= (12 if (outside and st.clip) else 3.2):
            _poly(img, [v, a, miter, b])
        else:
            _poly(img, [v, a, b])


def _raster(s: _Sketch) -> np.ndarray:
    wpx = int(math.ceil((s.w + 2 * MARGIN) * SCALE))
    hpx = int(math.ceil((CAP + 2 * MARGIN) * SCALE))
    clipped = np.zeros((hpx, wpx), np.uint8)
    free = np.zeros_like(clipped)
    for st in s.strokes:
        _stroke(clipped if st.clip else free, st, s.style.round_ends)
    for cx, cy, rx, ry in s.dots:
        c = _to_px(np.asarray([(cx, cy)], float))[0]
        axes = (int(round(rx * SCALE * 16)), int(round(ry * SCALE * 16)))
        cv2.ellipse(clipped, (int(c[0]), int(c[1])), axes, 0, 0, 360, 255, -1, cv2.LINE_AA, shift=4)
    for p0, p1, width in s.cuts:
        d = (p1 - p0) / np.hypot(*(p1 - p0))
        n = np.array([-d[1], d[0]]) * (width / 2 - 0.5 / SCALE)
        quad = _to_px(np.array([p0 + n, p1 + n, p1 - n, p0 - n]))
        cv2.fillConvexPoly(clipped, quad, 0, cv2.LINE_AA, shift=4)
    top, base = int(round(MARGIN * SCALE)), int(round((CAP + MARGIN) * SCALE))
    clipped[:top] = 0  # the cap band: diagonal ends come out cut flat, as on plates
    clipped[base:] = 0
    return np.maximum(clipped, free)


def _contours(img: np.ndarray, dx: float) -> list[list[tuple[int, int]]]:
    """Outline polygons in font units: outer contours clockwise, counters anticlockwise (y up), the
    TrueType convention, so counters stay hollow under FreeType's nonzero winding rule."""
    binary = (img >= 128).astype(np.uint8)
    found, hier = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    out = []
    for k, c in enumerate(found):
        if cv2.contourArea(c) < 4:  # raster specks
            continue
        c = cv2.approxPolyDP(c, 0.9, True).reshape(-1, 2).astype(float)
        if len(c) < 3:
            continue
        # traced through boundary pixels' centres: +0.5 px centres the outline on the ink's extent
        x = (c[:, 0] + 0.5) / SCALE - MARGIN + dx
        y = CAP + MARGIN - (c[:, 1] + 0.5) / SCALE
        poly = [(int(round(a)), int(round(b))) for a, b in zip(x, y, strict=True)]
        poly = [p for i, p in enumerate(poly) if p != poly[i - 1]]
        if len(poly) < 3:
            continue
        area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1], strict=True))
        is_hole = hier[0][k][3] >= 0
        if (area > 0) != is_hole:  # anticlockwise has positive area with y up
            poly.reverse()
        out.append(poly)
    return out


# --------------------------------------------------------------------------------------------------
# Fonts
# --------------------------------------------------------------------------------------------------
def _glyph_name(char: str) -> str:
    return _GLYPH_NAMES.get(char, char)


def build_font(style: PlateFontStyle, path: Path | str, name: str = "AnprdPlate") -> Path:
    """Draw every glyph of `style` and write a TrueType font to `path` (same style -> same bytes)."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    path = Path(path)
    sb = style.spacing * CAP
    glyphs, metrics, cmap = {}, {}, {}
    pen = TTGlyphPen(None)  # .notdef: an empty box
    nw = int(0.5 * CAP)
    for poly in ([(50, 0), (50, CAP), (nw, CAP), (nw, 0)], [(100, 50), (nw - 50, 50), (nw - 50, CAP - 50),
                                                           (100, CAP - 50)]):
        pen.moveTo(poly[0])
        for p in poly[1:]:
            pen.lineTo(p)
        pen.closePath()
    glyphs[".notdef"] = pen.glyph()
    metrics[".notdef"] = (nw + 50, 50)
    drawn: dict[str, tuple] = {}
    for char in CHARSET:
        key = "O" if (char == "0" and style.variant("0") == "same_as_O") else char
        if key not in drawn:
            sk = _draw(style, key)
            ink, cell = _width(style, key)
            dx = sb + (cell - ink) / 2  # narrow glyphs sit in the middle of a monospaced cell
            drawn[key] = (_contours(_raster(sk), dx), int(round(cell + 2 * sb)))
        polys, advance = drawn[key]
        pen = TTGlyphPen(None)
        for poly in polys:
            pen.moveTo(poly[0])
            for p in poly[1:]:
                pen.lineTo(p)
            pen.closePath()
        gname = _glyph_name(char)
        glyphs[gname] = pen.glyph()
        xmin = min((p[0] for poly in polys for p in poly), default=0)
        metrics[gname] = (advance, xmin)
        cmap[ord(char)] = gname
    glyphs["space"] = TTGlyphPen(None).glyph()
    metrics["space"] = (int(round(style.digit_width * CAP * 0.8 + 2 * sb)), 0)
    cmap[ord(" ")] = "space"
    order = [".notdef", "space"] + [_glyph_name(c) for c in CHARSET]

    fb = FontBuilder(UPM, isTTF=True)
    fb.updateHead(created=_EPOCH, modified=_EPOCH)  # fixed timestamps: same style, same bytes
    fb.setupGlyphOrder(order)
    fb.setupCharacterMap(cmap)
    fb.setupGlyf(glyphs)
    fb.setupHorizontalMetrics(metrics)
    fb.setupHorizontalHeader(ascent=ASCENT, descent=DESCENT)
    fb.setupNameTable({"familyName": name, "styleName": "Regular", "uniqueFontIdentifier": name,
                       "fullName": f"{name} Regular", "psName": f"{name}-Regular", "version": "Version 1.0"})
    fb.setupOS2(sTypoAscender=ASCENT, sTypoDescender=DESCENT, sTypoLineGap=0, usWinAscent=ASCENT,
                usWinDescent=-DESCENT, sCapHeight=CAP, sxHeight=int(CAP * 0.72), achVendID="NONE")
    fb.setupPost()
    path.parent.mkdir(parents=True, exist_ok=True)
    fb.save(str(path))
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached(out_dir: Path, key: dict) -> list[Path] | None:
    """The fonts a matching manifest lists, if every file is still there unchanged."""
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or {k: manifest.get(k) for k in key} != key:
        return None
    paths = []
    for entry in manifest.get("fonts", []):
        name = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            return None
        p = out_dir / name
        if not p.is_file() or _sha256(p) != entry.get("sha256"):
            return None
        paths.append(p)
    return paths if len(paths) == key["count"] else None


def _listed(out_dir: Path) -> set[str]:
    """Font file names an existing manifest lists."""
    try:
        fonts = json.loads((out_dir / "manifest.json").read_text()).get("fonts", [])
        return {Path(e["file"]).name for e in fonts if str(e.get("file", "")).endswith(".ttf")}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return set()


def build_plate_fonts(out_dir: Path, count: int, seed: int, families: Sequence[str] | None = None
                      ) -> list[Path]:
    """`count` plate fonts in `out_dir`, families taken in turn so that each appears; deterministic for
    a seed. A `manifest.json` records each file's family, style and hash; when it matches seed, count,
    families and builder version the existing files are reused (repeated training starts are instant)."""
    out_dir = Path(out_dir)
    families = tuple(families) if families else FAMILIES
    bad = [f for f in families if f not in FAMILIES]
    if bad:
        raise ValueError(f"unknown font families {bad}; choose from {', '.join(FAMILIES)}")
    if count < 1:
        raise ValueError("count must be at least 1")
    key = {"version": BUILDER_VERSION, "seed": int(seed), "count": int(count), "families": list(families)}
    cached = _cached(out_dir, key)
    if cached is not None:
        return cached
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = _listed(out_dir)
    entries, paths = [], []
    for i in range(count):
        family = families[i % len(families)]
        style = random_style(np.random.default_rng([int(seed), i]), family)
        path = out_dir / f"plate-{i:02d}-{family}.ttf"
        # write next to the target and rename: a reader never sees half a font
        fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".ttf.tmp")
        os.close(fd)
        try:
            build_font(style, tmp, name=f"AnprdPlate{seed}x{i:02d}{family.capitalize()}")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        entries.append({"file": path.name, "family": family, "sha256": _sha256(path),
                        "style": style.to_dict()})
        paths.append(path)
    manifest = {**key, "fonts": entries}
    tmp_manifest = out_dir / "manifest.json.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp_manifest, out_dir / "manifest.json")
    for name in stale - {p.name for p in paths}:  # fonts of an older build only (never foreign files)
        (out_dir / name).unlink(missing_ok=True)
    return paths


def contact_sheet(font_paths: Sequence[Path | str], out_png: Path | str, size: int = 64,
                  text: str = CHARSET) -> Path:
    """One row per font showing every glyph (with each font's file name), for eyeballing the drawings."""
    from PIL import Image, ImageDraw, ImageFont

    label = ImageFont.load_default()
    rows = []
    for p in font_paths:
        font = ImageFont.truetype(str(p), size)
        width = int(font.getlength(text)) + 20
        im = Image.new("L", (width, int(size * 1.25) + 16), 255)
        d = ImageDraw.Draw(im)
        d.text((10, 2), Path(p).name, fill=120, font=label)
        d.text((10, 14), text, fill=0, font=font)
        rows.append(im)
    sheet = Image.new("L", (max(r.width for r in rows), sum(r.height for r in rows)), 255)
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    out_png = Path(out_png)
    sheet.save(out_png)
    return out_png


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.plate_fonts", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("data/plate-fonts"), help="folder for the .ttf files")
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--family", action="append", choices=FAMILIES,
                    help="repeat to pick families (default: all, in turn)")
    ap.add_argument("--sheet", type=Path, help="also write a PNG contact sheet of the fonts")
    args = ap.parse_args(argv)
    try:
        paths = build_plate_fonts(args.out, args.count, args.seed, args.family)
        if args.sheet:
            contact_sheet(paths, args.sheet)
    except (OSError, ValueError) as exc:
        print(f"error: cannot build plate fonts in {args.out}: {exc}", file=sys.stderr)
        return 2
    print(f"{len(paths)} plate fonts in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
