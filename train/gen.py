"""Synthetic training windows: a rendered plate, posed and composited onto a real background.

The seed design (matthewearl/deep-anpr) with its single font and single 7-character format replaced by
three plate families (UK, EU, US-like) in 16 fonts and 1-10 characters, and with what real cameras add:
perspective, motion and defocus blur, low resolution, JPEG artefacts, uneven light and shadow, night and
infrared looks, holders, screws, dirt and partial occlusion.

A window is 128x64 grayscale. It is labelled "plate present" by the seed's rule (see `presence_label`);
negatives come in four kinds: truncated, too small, too big and absent.

    python -m train.gen --count 200 --out data/look --seed 1            # windows + labels.tsv
    python -m train.gen --scenes --count 50 --out data/synth-test --seed 7   # full images for `anprd eval`
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from anprd.ctc import ALPHABET
from train.fonts import available_fonts, plate_fonts_by_family, unseen_fonts
from train.plates import StyledSpec, only_countries, random_styled_plate, render_styled_plate, style_by_key

__all__ = [
    "WINDOW_H",
    "WINDOW_W",
    "Backgrounds",
    "PlateSpec",
    "WindowSample",
    "ReadSample",
    "presence_label",
    "random_plate_spec",
    "sample_read_crop",
    "spec_for_font",
    "occlusion_bar",
    "render_plate",
    "sample_window",
    "sample_scene",
]

WINDOW_W, WINDOW_H = 128, 64
MAX_LABEL = 10
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
NEGATIVE_KINDS = ("truncated", "too_small", "too_big", "absent")
CREST_FRACTION = 0.3  # EU plates in training windows and reader crops drawn with a crest, not a band
STACKED_STICKER_FRACTION = 0.6  # EU "emblem" gaps drawn as two stacked round stickers
# styled windows whose plate covers a real plate of a road frame (../shared/data/streets' boxes): the
# network sees plates on cars, with lamps, grilles and badges around them, not only on stock photos
ON_CAR_FRACTION = 0.5
# I, O and Q look like 1 and 0, and many registration series leave them out of their letter positions
# (France, Italy, Spain, the Netherlands, Czech series letters, UK random letters, many US states).
# Others use them (Slovak district codes: NO, PO), so they are drawn at half the other letters' rate:
# a reader's prior for a round glyph where a format allows a letter or a digit leans to the digit, as
# on most real plates. Vanity texts ('X') keep every symbol equally likely.
RARE_LETTERS, RARE_LETTER_WEIGHT = "IOQ", 0.5
LETTER_P = np.array([RARE_LETTER_WEIGHT if c in RARE_LETTERS else 1.0 for c in LETTERS])
LETTER_P /= LETTER_P.sum()


# --------------------------------------------------------------------------------------------------
# The presence rule (the seed's, exactly)
# --------------------------------------------------------------------------------------------------
def presence_label(box: tuple[float, float, float, float], window_w: int = WINDOW_W,
                   window_h: int = WINDOW_H) -> bool:
    """True when the plate's bounding box (x0, y0, x1, y1) in window pixels makes a positive window.

    All must hold: the plate lies fully inside the window; its width < 80% and height < 87.5% of the
    window; its width > 60% or its height > 60% of the window.
    """
    x0, y0, x1, y1 = box
    inside = x0 >= 0 and y0 >= 0 and x1 <= window_w and y1 <= window_h
    w, h = x1 - x0, y1 - y0
    not_too_big = w < 0.8 * window_w and h < 0.875 * window_h
    big_enough = w > 0.6 * window_w or h > 0.6 * window_h
    return bool(inside and not_too_big and big_enough)


# --------------------------------------------------------------------------------------------------
# Plate text formats
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlateSpec:
    """What to draw: family ('uk', 'eu', 'us'), groups of characters and the separators between them."""

    family: str
    groups: tuple[str, ...]
    separators: tuple[str, ...]  # len(groups) - 1 items from: " ", "-", "emblem", "dot", ""

    @property
    def text(self) -> str:
        return "".join(self.groups)


def _fill(rng: np.random.Generator, pattern: str) -> str:
    """'L' -> random letter (I, O, Q rarer: `LETTER_P`), 'N' -> random digit, 'X' -> any symbol."""
    out = []
    for p in pattern:
        if p == "L":
            out.append(LETTERS[rng.choice(len(LETTERS), p=LETTER_P)])
        else:
            pool = DIGITS if p == "N" else ALPHABET
            out.append(pool[rng.integers(len(pool))])
    return "".join(out)


LEGACY_ASPECT = {"uk": 4.7, "eu": 4.7, "us": 2.0}  # the three generic families, before national styles


def plate_aspect(spec: PlateSpec | StyledSpec) -> float:
    """Width over height of the plate `spec` is drawn on."""
    if spec.family in LEGACY_ASPECT:
        return LEGACY_ASPECT[spec.family]
    style = style_by_key(spec.family)
    if style is None:
        raise KeyError(f"no plate style {spec.family!r}")
    return style.aspect


def random_plate_and_font(rng: np.random.Generator, fonts: list[Path], styled: float = 0.0,
                          label_as_drawn: bool = True, plate_fonts: dict[str, list[Path]] | None = None
                          ) -> tuple[PlateSpec | StyledSpec, str]:
    """A plate text and the font to draw it in, labelled as the font draws it (`spec_for_font`) for
    training; with `label_as_drawn` False the label is the registration itself (test scenes: a UK
    plate's O is an O, though its font draws it as the 0, and only a country's format can tell).

    `styled` of them are national styles from the library (`train.plates`), drawn mostly in the plate
    lettering of their country (`train.plate_fonts`); the rest are the three generic families in
    `fonts`. With styled = 0 no extra random number is drawn, so sets made before styles keep
    their plates. `plate_fonts` replaces the procedural plate fonts by family ({}: `fonts` only)."""
    if styled > 0 and rng.random() < styled:
        spec, font = random_styled_plate(rng, plate_fonts_by_family() if plate_fonts is None else plate_fonts,
                                         fonts)
    else:
        spec = random_plate_spec(rng)
        font = str(fonts[rng.integers(len(fonts))])
    return (spec_for_font(spec, font) if label_as_drawn else spec), font


# pattern groups per family; separators are drawn per plate
UK_FORMATS = (("LLNN", "LLL"), ("LNNN", "LLL"), ("LNN", "LLL"), ("LLL", "NNNL"), ("LLL", "NNL"),
              ("NNNN", "LL"), ("LLL", "NNN"), ("LN", "LLL"))
EU_FORMATS = (("LL", "NNNLL"), ("NLX", "NNNN"), ("LLL", "NNNN"), ("LL", "NNNNN"), ("LL", "NNN", "LL"),
              ("L", "LL", "NNNN"), ("LL", "L", "NNN"), ("LLL", "LL", "NNN"), ("NN", "LLL", "N"),
              ("LL", "NNN", "L"), ("L", "NNNN", "L"), ("LL", "NNNLL"), ("LL", "NNNLL"), ("NLN", "NNNN"))
US_FORMATS = (("NLLL", "NNN"), ("LLL", "NNNN"), ("NNN", "LLL"), ("LLL", "NNN"), ("NLL", "NNN"),
              ("NNNNNN",), ("NN", "LLL", "N"), ("LL", "NNNN"), ("NNN", "NNN"), ("L", "NNNNN"),
              ("LLLNNNN",), ("NLLLNNN",))


def random_plate_spec(rng: np.random.Generator, family: str | None = None) -> PlateSpec:
    """A random plate text in a realistic format, sometimes a free-form 1-10 character vanity text."""
    family = family or str(rng.choice(["uk", "eu", "us"], p=[0.25, 0.45, 0.30]))
    roll = rng.random()
    if roll < 0.12:  # vanity / unusual length, any family
        n = int(rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
                           p=[.02, .05, .08, .12, .17, .17, .17, .12, .06, .04]))
        text = _fill(rng, "X" * n)
        if n >= 4 and rng.random() < 0.5:
            cut = int(rng.integers(1, n))
            return PlateSpec(family, (text[:cut], text[cut:]), (str(rng.choice([" ", "-"])),))
        return PlateSpec(family, (text,), ())
    formats = {"uk": UK_FORMATS, "eu": EU_FORMATS, "us": US_FORMATS}[family]
    groups = tuple(_fill(rng, g) for g in formats[rng.integers(len(formats))])
    if family == "uk":
        seps = tuple(" " for _ in groups[1:])
    elif family == "eu":
        kinds = [" ", "-", "emblem", ""]
        seps = tuple(str(rng.choice(kinds, p=[0.4, 0.25, 0.25, 0.1])) for _ in groups[1:])
    else:
        kinds = [" ", "-", "emblem", "dot", ""]
        seps = tuple(str(rng.choice(kinds, p=[0.35, 0.2, 0.15, 0.05, 0.25])) for _ in groups[1:])
    return PlateSpec(family, groups, seps)


# --------------------------------------------------------------------------------------------------
# Plate rendering (grayscale: the network sees luminance only)
# --------------------------------------------------------------------------------------------------
US_STATES = ("CALIFORNIA", "TEXAS", "FLORIDA", "NEW YORK", "OHIO", "GEORGIA", "ARIZONA", "NEVADA",
             "OREGON", "IOWA", "MAINE", "UTAH", "ILLINOIS", "VIRGINIA", "MICHIGAN", "COLORADO",
             "MARYLAND", "ALABAMA", "KANSAS", "IDAHO", "NEW JERSEY", "WASHINGTON", "MONTANA")
US_SLOGANS = ("SUNSHINE STATE", "THE LONE STAR STATE", "EMPIRE STATE", "GRAND CANYON STATE",
              "dmv.gov", "LAND OF LINCOLN", "GREAT LAKES", "THE GOLDEN STATE", "EXPLORE")
EU_CODES = ("SK", "CZ", "D", "PL", "A", "NL", "F", "I", "H", "B", "E", "RO", "SLO", "GB", "UK")


@lru_cache(maxsize=512)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


GLYPH_SIZES = (12, 16, 24, 32, 48, 64, 96, 128)


@lru_cache(maxsize=8192)
def _glyph(char: str, font_path: str, size: int) -> np.ndarray:
    """One character's mask, as tall as the font's cap height and at least its advance wide (cached).

    Ink outside the cap band (Q's tail in most fonts, J's hook below the baseline in some) is kept and
    the glyph squeezed into the band, as plate typefaces draw them: cropped at the band, Q came out as
    an O and J as an I, labelled Q and J.
    """
    font = _font(font_path, size)
    _, cap_top, _, cap_bottom = font.getbbox("0AHM")
    left, top, right, bottom = font.getbbox(char)
    if right <= left or bottom <= top:  # no ink (a space)
        left, top, right, bottom = 0, cap_top, 0, cap_bottom
    top, bottom = min(top, cap_top), max(bottom, cap_bottom)
    x0 = min(0, left)  # ink left of the pen position (a J's hook in some fonts)
    advance = max(1, int(round(font.getlength(char))))
    im = Image.new("L", (max(advance, right) - x0 + 2, bottom - top + 2), 0)
    ImageDraw.Draw(im).text((1 - x0, 1 - top), char, font=font, fill=255)
    mask = np.asarray(im)
    band = cap_bottom - cap_top + 2
    if mask.shape[0] != band:
        mask = cv2.resize(mask, (mask.shape[1], band), interpolation=cv2.INTER_AREA)
    return mask


# pairs a plate font may draw alike; the letter is replaced by the digit where the glyphs are identical
CONFUSABLE_PAIRS = (("O", "0"), ("I", "1"), ("B", "8"), ("S", "5"), ("Z", "2"), ("D", "0"), ("Q", "0"))


def _ink(char: str, font_path: str) -> np.ndarray:
    """A glyph's inked area, cropped and resized to 24x32 in [0, 1], for comparing shapes."""
    mask = _glyph(char, font_path, 64)
    ys, xs = np.nonzero(mask > 64)
    if len(xs) == 0:
        return np.zeros((32, 24), np.float32)
    ink = mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1].astype(np.float32) / 255
    return cv2.resize(ink, (24, 32), interpolation=cv2.INTER_AREA)


@lru_cache(maxsize=64)
def identical_glyphs(font_path: str) -> dict[str, str]:
    """Letters this font draws exactly as a digit (OSP-DIN and Bebas Neue share one glyph for O and
    0), mapped to that digit. No reader can tell them apart, so the label must follow the glyph."""
    return {letter: digit for letter, digit in CONFUSABLE_PAIRS
            if np.abs(_ink(letter, font_path) - _ink(digit, font_path)).mean() < 0.01}


def spec_for_font(spec: PlateSpec | StyledSpec, font_path: str) -> PlateSpec | StyledSpec:
    """The plate as `font_path` will draw it: letters the font cannot tell from a digit become it."""
    same = identical_glyphs(font_path)
    if not same:
        return spec
    return type(spec)(spec.family, tuple("".join(same.get(c, c) for c in g) for g in spec.groups),
                      spec.separators)


def _text_mask(text: str, font_path: str, size: int) -> np.ndarray:
    """White-on-black mask of `text`, glyphs from a cache (PIL text layout is the generator's hot spot)."""
    return _text_mask_and_centres(text, font_path, size)[0]


def _text_mask_and_centres(text: str, font_path: str, size: int) -> tuple[np.ndarray, list[float]]:
    """The mask and each character's horizontal centre in it."""
    size = next((s for s in GLYPH_SIZES if s >= size), GLYPH_SIZES[-1])
    glyphs = [_glyph(ch, font_path, size) for ch in text]
    height = max(g.shape[0] for g in glyphs)
    widths = np.array([g.shape[1] for g in glyphs], np.float32)
    centres = (np.cumsum(widths) - widths / 2).tolist()
    return np.concatenate([np.pad(g, ((0, height - g.shape[0]), (0, 0))) for g in glyphs], axis=1), centres


def _text_strip(spec: PlateSpec, font_path: str, size: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, list[float]]:
    """The plate's characters as one mask, groups joined by their separators, and each character's
    horizontal centre in the strip (the reader is taught which column holds which character)."""
    rendered = [_text_mask_and_centres(g, font_path, size) for g in spec.groups]
    height = max(m.shape[0] for m, _ in rendered)
    parts: list[np.ndarray] = []
    centres: list[float] = []
    x = 0
    for i, (m, group_centres) in enumerate(rendered):
        if m.shape[0] < height:
            m = np.pad(m, ((0, height - m.shape[0]), (0, 0)))
        parts.append(m)
        centres += [x + c for c in group_centres]
        x += m.shape[1]
        if i < len(spec.separators):
            sep = spec.separators[i]
            gap_w = {"": max(1, height // 12), " ": height // 2, "-": height // 2,
                     "emblem": int(height * 0.75), "seals": int(height * 0.75), "dot": height // 3}[sep]
            gap = np.zeros((height, gap_w), np.uint8)
            if sep == "-":
                t = max(1, height // 9)
                gap[height // 2 - t: height // 2 + t, gap_w // 5: gap_w - gap_w // 5] = 255
            elif sep == "dot":
                cv2.circle(gap, (gap_w // 2, height // 2), max(1, height // 10), 255, -1)
            elif sep == "seals" or (sep == "emblem" and spec.family == "eu"
                                    and rng.random() < STACKED_STICKER_FRACTION):
                # two round stickers one above the other (registration and inspection seals on German,
                # Czech, Slovak and Austrian plates): a reader must not take the pair for an 8 or a colon
                cx = gap_w // 2
                radius = max(1, int(height * rng.uniform(0.13, 0.21)))
                for cy in (int(height * rng.uniform(0.22, 0.32)), int(height * rng.uniform(0.68, 0.78))):
                    cv2.circle(gap, (cx, cy), radius, int(rng.integers(60, 230)), -1)
                    if rng.random() < 0.5:
                        cv2.circle(gap, (cx, cy), radius, 255, max(1, height // 20))
            elif sep == "emblem":  # a crest, sticker or state shape: an outlined blob in the gap
                cx, cy = gap_w // 2, height // 2
                axes = (max(2, int(gap_w * 0.38)), max(2, int(height * rng.uniform(0.25, 0.45))))
                cv2.ellipse(gap, (cx, cy), axes, 0, 0, 360, int(rng.integers(60, 200)), -1)
                cv2.ellipse(gap, (cx, cy), axes, 0, 0, 360, 255, max(1, height // 16))
            parts.append(gap)
            x += gap_w
    return np.concatenate(parts, axis=1), centres


def _paint(canvas: np.ndarray, mask: np.ndarray, x: int, y: int, value: float) -> None:
    """Blend `value` into canvas through mask (0-255) placed at (x, y), clipped to the canvas."""
    h, w = mask.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, canvas.shape[1]), min(y + h, canvas.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    alpha = mask[y0 - y: y1 - y, x0 - x: x1 - x].astype(np.float32) / 255.0
    region = canvas[y0:y1, x0:x1]
    region[:] = region * (1 - alpha) + value * alpha


def _fit_text(canvas: np.ndarray, strip: np.ndarray, box: tuple[int, int, int, int], value: float,
              rng: np.random.Generator) -> tuple[float, float, float]:
    """Scale the text strip into box (x0, y0, x1, y1), keeping a plausible aspect, and paint it.

    Returns (x_offset, x_scale, y_centre): strip x maps to canvas x_offset + x * x_scale.
    """
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    sh = bh
    sw = strip.shape[1] * sh / strip.shape[0] * rng.uniform(0.85, 1.15)
    if sw > bw:  # too wide: squeeze horizontally a little, then shrink as a whole
        squeeze = max(0.75, bw / sw)
        sw *= squeeze
        if sw > bw:
            sh *= bw / sw
            sw = bw
    sw, sh = max(1, int(sw)), max(1, int(sh))
    resized = cv2.resize(strip, (sw, sh), interpolation=cv2.INTER_AREA)
    left, top = x0 + (bw - sw) // 2, y0 + (bh - sh) // 2
    _paint(canvas, resized, left, top, value)
    return float(left), sw / strip.shape[1], top + sh / 2


def render_plate(spec: PlateSpec, font_path: str, plate_h: int, rng: np.random.Generator,
                 difficulty: float = 1.0, infrared: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Render a plate, optionally inside a dark holder; see `render_plate_with_chars`."""
    canvas, corners, _ = render_plate_with_chars(spec, font_path, plate_h, rng, difficulty, infrared)
    return canvas, corners


def render_plate_with_chars(spec: PlateSpec, font_path: str, plate_h: int, rng: np.random.Generator,
                            difficulty: float = 1.0, infrared: bool = False, crest_fraction: float = 0.0
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render a plate, optionally inside a dark holder, and say where each character's centre is.

    `crest_fraction` of EU plates get an older national design instead of the blue band: a coat of
    arms outlined in the text colour, with the country code under it, on the plate's own colour
    (Slovak plates until 2022 look like this). Readers taught only the band read the outlined shield
    as a letter (V, U). With 0, no random number is drawn for it, so clips rendered before it keep
    their pixels.

    Returns (canvas, plate_corners, char_centres): a float32 HxW luminance image, the plate rectangle's
    4 corners (x, y) in canvas pixels and an N x 2 array of the N characters' centres. The holder
    lies outside the plate rectangle; the presence rule uses the plate only.
    """
    if spec.family not in LEGACY_ASPECT:  # a national style from the library
        plate, _, char_centres = render_styled_plate(spec, font_path, plate_h, rng, difficulty, infrared)
        return _dirt_holder_occlusion(plate, rng, difficulty, char_centres)
    aspect = LEGACY_ASPECT[spec.family] * rng.uniform(0.93, 1.07)
    plate_w = max(8, int(round(plate_h * aspect)))
    if spec.family == "uk":
        plate_lum = rng.uniform(205, 255) if rng.random() < 0.5 else rng.uniform(165, 215)  # white/yellow
    elif spec.family == "eu":
        plate_lum = rng.uniform(190, 255)
    else:
        plate_lum = rng.uniform(135, 255)
    if infrared:  # retroreflective plates glow under IR
        plate_lum = rng.uniform(225, 255)
    text_lum = rng.uniform(0, max(10.0, plate_lum - 110))
    plate = np.full((plate_h, plate_w), plate_lum, np.float32)

    if spec.family == "us" and rng.random() < 0.6:  # printed background graphics / gradients
        ramp = np.linspace(0, 1, plate_h, dtype=np.float32)[:, None]
        plate -= ramp * rng.uniform(0, 40) if rng.random() < 0.5 else (1 - ramp) * rng.uniform(0, 40)
        if rng.random() < 0.4:
            for _ in range(int(rng.integers(1, 4))):
                c = (int(rng.integers(0, plate_w)), int(rng.integers(0, plate_h)))
                cv2.circle(plate, c, int(rng.integers(plate_h // 6, plate_h)),
                           float(plate_lum - rng.uniform(10, 45)), -1)
            plate = cv2.GaussianBlur(plate, (0, 0), max(1.0, plate_h / 20))

    left = int(plate_w * 0.03)
    top, bottom = int(plate_h * 0.12), int(plate_h * 0.88)
    crest = crest_fraction > 0 and spec.family == "eu" and rng.random() < crest_fraction
    band = not crest and (spec.family == "eu" or (spec.family == "uk" and rng.random() < 0.4))
    if crest:
        crest_w = max(3, int(plate_w * rng.uniform(0.05, 0.08)))
        cx0, cy0, ch = int(plate_w * 0.025), int(plate_h * rng.uniform(0.08, 0.16)), plate_h * 0.42
        shield = np.array([[0, 0], [1, 0], [1, 0.6], [0.5, 1], [0, 0.6]]) * [crest_w, ch] + [cx0, cy0]
        stroke = max(1, plate_h // 22)
        cv2.polylines(plate, [shield.astype(np.int32)], True, float(text_lum), stroke)
        if rng.random() < 0.6:  # a double cross or similar charge inside
            mid = cx0 + crest_w // 2
            cv2.line(plate, (mid, int(cy0 + ch * 0.15)), (mid, int(cy0 + ch * 0.8)), float(text_lum), stroke)
            cv2.line(plate, (int(cx0 + crest_w * 0.25), int(cy0 + ch * 0.35)),
                     (int(cx0 + crest_w * 0.75), int(cy0 + ch * 0.35)), float(text_lum), stroke)
        code = str(rng.choice(EU_CODES))
        code_mask = _text_mask(code, FONTS_FOR_SMALL_TEXT[0], 24)
        code_h = max(2, int(plate_h * 0.22))
        code_w = min(crest_w + 4, max(2, int(code_mask.shape[1] * code_h / code_mask.shape[0])))
        _paint(plate, cv2.resize(code_mask, (code_w, code_h)), cx0, int(plate_h * 0.66), float(text_lum))
        left = cx0 + max(crest_w, code_w) + int(plate_w * 0.02)
    if band:
        band_w = int(plate_w * rng.uniform(0.07, 0.1))
        band_lum = rng.uniform(30, 100)
        plate[:, :band_w] = band_lum
        code = str(rng.choice(EU_CODES))
        code_mask = _text_mask(code, FONTS_FOR_SMALL_TEXT[0], 24)
        ch = max(2, int(plate_h * 0.28))
        cw = min(band_w - 2, max(2, int(code_mask.shape[1] * ch / code_mask.shape[0])))
        _paint(plate, cv2.resize(code_mask, (max(1, cw), ch)), (band_w - cw) // 2,
               int(plate_h * 0.62), 240)
        stars_r = max(2, int(band_w * 0.3))  # the ring of EU stars, as dots
        for k in range(12):
            a = 2 * math.pi * k / 12
            cv2.circle(plate, (int(band_w / 2 + stars_r * math.cos(a)),
                               int(plate_h * 0.3 + stars_r * math.sin(a))), max(1, plate_h // 40),
                       float(rng.uniform(170, 230)), -1)
        left = band_w + int(plate_w * 0.02)
    if spec.family == "us":  # state name above, slogan below: text the reader must ignore
        top, bottom = int(plate_h * rng.uniform(0.2, 0.3)), int(plate_h * rng.uniform(0.75, 0.85))
        state = _text_mask(str(rng.choice(US_STATES)), FONTS_FOR_SMALL_TEXT[rng.integers(2)], 32)
        sh = max(2, int(plate_h * rng.uniform(0.1, 0.16)))
        sw = min(plate_w - 4, int(state.shape[1] * sh / state.shape[0]))
        _paint(plate, cv2.resize(state, (max(1, sw), sh)), (plate_w - sw) // 2, int(plate_h * 0.04),
               rng.uniform(0, plate_lum - 60))
        if rng.random() < 0.6:
            slogan = _text_mask(str(rng.choice(US_SLOGANS)), FONTS_FOR_SMALL_TEXT[0], 24)
            sh = max(2, int(plate_h * rng.uniform(0.07, 0.11)))
            sw = min(plate_w - 4, int(slogan.shape[1] * sh / slogan.shape[0]))
            _paint(plate, cv2.resize(slogan, (max(1, sw), sh)), (plate_w - sw) // 2,
                   int(plate_h * 0.87), rng.uniform(0, plate_lum - 50))
    size = int(np.clip(plate_h * 0.8, 10, 160))
    strip, strip_centres = _text_strip(spec, font_path, size, rng)
    text_box = (left + int(plate_w * 0.02), top, plate_w - int(plate_w * 0.04), bottom)
    fit_seed = int(rng.integers(2**31))
    if spec.family == "us" and rng.random() < 0.5:  # embossed: a lighter copy offset by a pixel
        shifted = (text_box[0] + 1, text_box[1] + 1, text_box[2] + 1, text_box[3] + 1)
        _fit_text(plate, strip, shifted, min(255, plate_lum + 25), np.random.default_rng(fit_seed))
    x_offset, x_scale, y_centre = _fit_text(plate, strip, text_box, text_lum, np.random.default_rng(fit_seed))
    char_centres = np.array([[x_offset + c * x_scale, y_centre] for c in strip_centres], np.float32)

    if rng.random() < 0.5:  # printed border
        t = max(1, plate_h // 30)
        cv2.rectangle(plate, (t, t), (plate_w - 1 - t, plate_h - 1 - t), float(text_lum), t)
    if rng.random() < 0.35 * difficulty:  # screws
        r = max(1, plate_h // 18)
        ys = int(plate_h * rng.uniform(0.08, 0.5))
        for xs in (int(plate_w * 0.22), int(plate_w * 0.78)):
            cv2.circle(plate, (xs, ys), r, float(rng.uniform(90, 200)), -1)
    return _dirt_holder_occlusion(plate, rng, difficulty, char_centres)


def _dirt_holder_occlusion(plate: np.ndarray, rng: np.random.Generator, difficulty: float,
                           char_centres: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What every plate gets after its own paint: dirt, often a dark holder (sometimes with a dealer
    line), and rarely a bar across it. Returns (canvas, plate corners, character centres) in canvas
    pixels."""
    plate_h, plate_w = plate.shape
    if rng.random() < 0.35 * difficulty:  # dirt
        dirt = np.zeros_like(plate)
        for _ in range(int(rng.integers(1, 6))):
            c = (int(rng.integers(0, plate_w)), int(rng.integers(0, plate_h)))
            ax = (int(rng.integers(1, max(2, plate_w // 5))), int(rng.integers(1, max(2, plate_h // 3))))
            cv2.ellipse(dirt, c, ax, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        dirt = cv2.GaussianBlur(dirt, (0, 0), max(1.0, plate_h / 10))
        plate *= 1 - dirt * rng.uniform(0.1, 0.45)

    # holder: a dark frame around the plate, sometimes with a dealer line at the bottom
    if rng.random() < 0.6:
        bx = int(plate_w * rng.uniform(0.01, 0.06))
        by_top = int(plate_h * rng.uniform(0.03, 0.15))
        by_bottom = int(plate_h * rng.uniform(0.03, 0.3))
        holder_lum = rng.uniform(5, 90)
        canvas = np.full((plate_h + by_top + by_bottom, plate_w + 2 * bx), holder_lum, np.float32)
        canvas[by_top: by_top + plate_h, bx: bx + plate_w] = plate
        if by_bottom > plate_h * 0.15 and rng.random() < 0.5:
            dealer = _text_mask("AUTO " + _fill(rng, "LLLLL"), FONTS_FOR_SMALL_TEXT[0], 20)
            dh = max(2, int(by_bottom * 0.6))
            dw = min(canvas.shape[1] - 2, int(dealer.shape[1] * dh / dealer.shape[0]))
            _paint(canvas, cv2.resize(dealer, (max(1, dw), dh)), (canvas.shape[1] - dw) // 2,
                   by_top + plate_h + (by_bottom - dh) // 2, min(255, holder_lum + 120))
        ox, oy = bx, by_top
    else:
        canvas, ox, oy = plate, 0, 0
    occlusion_bar(canvas, rng, difficulty)
    corners = np.array([[ox, oy], [ox + plate_w, oy], [ox + plate_w, oy + plate_h], [ox, oy + plate_h]],
                       np.float32)
    return canvas, corners, char_centres + np.array([ox, oy], np.float32)


def occlusion_bar(canvas: np.ndarray, rng: np.random.Generator, difficulty: float) -> tuple[int, int] | None:
    """Partial occlusion, on 6% of plates at full difficulty: a bar (tow hitch, bike rack) painted
    across the plate's canvas. Returns its x range on the canvas, or None. The label keeps the
    characters under it, so a bar can make a plate unreadable (scripts/occluded_plates.py lists them)."""
    if rng.random() >= 0.06 * difficulty:
        return None
    bar_w = max(1, int(canvas.shape[1] * rng.uniform(0.02, 0.06)))
    bx0 = int(rng.integers(0, canvas.shape[1] - bar_w))
    canvas[:, bx0: bx0 + bar_w] = rng.uniform(0, 120)
    return bx0, bx0 + bar_w


FONTS_FOR_SMALL_TEXT = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSansNarrow-Bold.ttf",
)


# --------------------------------------------------------------------------------------------------
# Backgrounds
# --------------------------------------------------------------------------------------------------
def builtin_background_dirs() -> list[Path]:
    """Photos that ship inside installed wheels, so training works offline without ../shared."""
    import skimage

    return [Path(skimage.__file__).parent / "data"]


def _read_plate_boxes(folder: Path) -> dict[str, list[tuple[int, int, int, int]]]:
    """Plate boxes from a boxes.tsv/labels.tsv beside the images (file, x, y, w, h, ...)."""
    boxes: dict[str, list[tuple[int, int, int, int]]] = {}
    for name in ("boxes.tsv", "labels.tsv"):
        path = folder / name
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            cols = line.split("\t")
            if line.startswith("#") or len(cols) < 5 or not cols[1].strip():
                continue
            x, y, w, h = (int(float(c)) for c in cols[1:5])
            boxes.setdefault(cols[0], []).append((x, y, w, h))
    return boxes


class Backgrounds:
    """Random grayscale crops from photo folders, never overlapping a known plate box.

    Folders may hold a boxes.tsv (as ../shared/data/streets does): crops that touch a boxed plate are
    rejected, so a real plate is never labelled "absent". A small cache of decoded images is refreshed
    gradually so a worker does not hold hundreds of 720p frames in memory.
    """

    def __init__(self, folders: list[Path], rng: np.random.Generator, cache_size: int = 32,
                 refresh_every: int = 24, procedural_fraction: float = 0.08, balanced: bool = False) -> None:
        self.boxes: dict[Path, list[tuple[int, int, int, int]]] = {}
        self.folder_files: list[list[Path]] = []  # per folder, for `balanced`
        for folder in folders:
            folder = Path(folder)
            if not folder.is_dir():
                raise FileNotFoundError(f"background folder not found: {folder}")
            known = _read_plate_boxes(folder)
            found = [path for path in sorted(folder.rglob("*")) if path.suffix.lower() in IMAGE_SUFFIXES]
            self.boxes |= {path: known.get(path.name, []) for path in found}
            if found:
                self.folder_files.append(found)
        self.files = [path for found in self.folder_files for path in found]
        # balanced: each folder is drawn as often as the others, whatever its size (28 bundled photos
        # beside 534 street frames would otherwise be 5% of the backgrounds)
        self.balanced = balanced and len(self.folder_files) > 1
        if not self.files:
            raise FileNotFoundError(f"no background images in {', '.join(map(str, folders))}")
        self.rng = rng
        self.cache_size = cache_size
        self.refresh_every = refresh_every
        self.procedural_fraction = procedural_fraction
        self.cache: list[tuple[np.ndarray, list[tuple[int, int, int, int]]]] = []
        self.calls = 0

    def _load(self) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
        for _ in range(20):
            files = (self.folder_files[self.rng.integers(len(self.folder_files))] if self.balanced
                     else self.files)
            path = files[self.rng.integers(len(files))]
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if image is not None and min(image.shape) >= 32:
                return image, self.boxes[path]
        raise RuntimeError("could not decode any background image")

    def _procedural(self, w: int, h: int) -> np.ndarray:
        img = np.zeros((h, w), np.float32)
        for scale in (2, 4, 8, 16):
            small = self.rng.random((max(1, h // scale), max(1, w // scale))).astype(np.float32)
            img += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) * self.rng.uniform(0, 1)
        if self.rng.random() < 0.5:  # stripes, like grilles and bumpers
            period = self.rng.uniform(3, 20)
            axis = np.arange(h if self.rng.random() < 0.7 else w, dtype=np.float32)
            stripes = (np.sin(axis * 2 * np.pi / period) > 0).astype(np.float32)
            img += (stripes[:, None] if len(axis) == h else stripes[None, :]) * self.rng.uniform(0.5, 2)
        img -= img.min()
        return (img / max(1e-6, img.max()) * self.rng.uniform(60, 255)).astype(np.uint8)

    def crop_on_car(self, w: int, h: int, target: tuple[float, float, float, float]) -> np.ndarray | None:
        """A w x h crop of a photo with a boxed plate, placed so that the plate lies inside `target`
        (x0, y0, x1, y1 in crop pixels) with a margin: a synthetic plate painted over `target` then
        hides the real one and sits on a car, between its lamps and above its bumper. None when no
        cached photo has a plate box."""
        with_plates = [(image, boxes) for image, boxes in self.cache if boxes]
        if len(self.cache) < self.cache_size:
            self.cache.append(self._load())
        if not with_plates:
            return None
        image, boxes = with_plates[self.rng.integers(len(with_plates))]
        bx, by, bw, bh = boxes[self.rng.integers(len(boxes))]
        tx0, ty0, tx1, ty1 = target
        # crop pixels per photo pixel: the real plate 75-88% of the target's width or height at most
        zoom = min((tx1 - tx0) / bw, (ty1 - ty0) / bh) * self.rng.uniform(0.75, 0.88)
        if zoom <= 0:
            return None
        cx, cy = bx + bw / 2, by + bh / 2
        tcx, tcy = (tx0 + tx1) / 2, (ty0 + ty1) / 2
        matrix = np.float32([[zoom, 0, tcx - cx * zoom], [0, zoom, tcy - cy * zoom]])
        out = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
        # other plates of the photo that the crop shows would be unlabelled positives: refuse those
        for ox, oy, ow, oh in boxes:
            if (ox, oy, ow, oh) == (bx, by, bw, bh):
                continue
            x0, y0 = ox * zoom + matrix[0, 2], oy * zoom + matrix[1, 2]
            if x0 < w and y0 < h and x0 + ow * zoom > 0 and y0 + oh * zoom > 0:
                return None
        return out

    def crop(self, w: int, h: int) -> np.ndarray:
        """A w x h uint8 crop at a random zoom, free of known plates."""
        if self.rng.random() < self.procedural_fraction:
            return self._procedural(w, h)
        self.calls += 1
        if len(self.cache) < self.cache_size:
            self.cache.append(self._load())
        elif self.calls % self.refresh_every == 0:
            self.cache[self.rng.integers(len(self.cache))] = self._load()
        for _ in range(30):
            image, boxes = self.cache[self.rng.integers(len(self.cache))]
            ih, iw = image.shape
            zoom = math.exp(self.rng.uniform(math.log(0.4), math.log(4.0)))
            cw, ch = min(iw, int(w * zoom)), min(ih, int(h * zoom))
            cw, ch = max(4, min(cw, int(ch * w / h))), max(2, min(ch, int(cw * h / w)))
            x, y = int(self.rng.integers(0, iw - cw + 1)), int(self.rng.integers(0, ih - ch + 1))
            if any(x < bx + bw * 1.2 and bx - bw * 0.2 < x + cw and y < by + bh * 1.3 and
                   by - bh * 0.3 < y + ch for bx, by, bw, bh in boxes):
                continue
            out = cv2.resize(image[y: y + ch, x: x + cw], (w, h), interpolation=cv2.INTER_AREA)
            return cv2.flip(out, 1) if self.rng.random() < 0.5 else out
        return self._procedural(w, h)


# --------------------------------------------------------------------------------------------------
# Pose and composition
# --------------------------------------------------------------------------------------------------
def _pose_points(corners: np.ndarray, canvas_w: int, canvas_h: int, rng: np.random.Generator,
                 difficulty: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate the canvas in 3D (roll, pitch, yaw), project it, and return (canvas_pts, plate_pts) in
    arbitrary units centred near 0, with the plate 1 unit tall before rotation."""
    roll = rng.normal(0, 0.06 + 0.1 * difficulty)
    pitch = rng.uniform(-1, 1) * (0.15 + 0.35 * difficulty)
    yaw = rng.uniform(-1, 1) * (0.2 + 0.55 * difficulty)
    cr, sr, cp, sp, cy, sy = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), \
        math.cos(yaw), math.sin(yaw)
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot = rz @ rx @ ry
    plate_h = corners[2, 1] - corners[0, 1]
    centre = corners.mean(axis=0)
    canvas_corners = np.array([[0, 0], [canvas_w, 0], [canvas_w, canvas_h], [0, canvas_h]], np.float32)

    focal = rng.uniform(4, 30)  # in plate heights: small = strong perspective
    def project(pts: np.ndarray) -> np.ndarray:
        p = np.concatenate([(pts - centre) / plate_h, np.zeros((len(pts), 1))], axis=1) @ rot.T
        return (p[:, :2] * focal / (focal + p[:, 2:3])).astype(np.float32)

    return project(canvas_corners), project(corners)


def _apply_camera(img: np.ndarray, rng: np.random.Generator, difficulty: float, night: bool) -> np.ndarray:
    """What a real camera adds, on a float32 luminance window; returns uint8."""
    h, w = img.shape
    d = difficulty
    # uneven light: a linear gradient in a random direction, then contrast/brightness
    if rng.random() < 0.6:
        ang = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = ((xx - w / 2) * math.cos(ang) + (yy - h / 2) * math.sin(ang)) / max(w, h)
        img = img * (1 + ramp * rng.uniform(0, 0.9 * d + 0.1))
    if rng.random() < 0.3 * d:  # a hard-edged shadow across part of the window
        pts = np.array([[rng.uniform(-w, 2 * w), rng.uniform(-h, 2 * h)] for _ in range(4)], np.int32)
        mask = np.zeros((h, w), np.float32)
        cv2.fillConvexPoly(mask, cv2.convexHull(pts), 1.0)
        mask = cv2.GaussianBlur(mask, (0, 0), rng.uniform(0.5, 3))
        img = img * (1 - mask * rng.uniform(0.25, 0.7))
    if night:
        img = img * rng.uniform(0.3, 0.65)
    contrast = math.exp(float(np.clip(rng.normal(0, 0.2 * d + 0.05), -0.45, 0.4)))
    img = (img - img.mean()) * contrast + img.mean() + rng.normal(0, 15 * d)
    # optics and motion
    if rng.random() < 0.3 * d:
        length = int(rng.integers(2, 3 + int(4 * d)))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1
        rotm = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1)
        kernel = cv2.warpAffine(kernel, rotm, (length, length))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    if rng.random() < 0.5:
        sigma = rng.uniform(0.1, 0.4 + 0.8 * d)
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    if rng.random() < 0.35 * d:  # low resolution, as when the pyramid upsamples a small plate
        f = rng.uniform(1.2, 1.2 + 1.0 * d)
        small = cv2.resize(img, (max(8, int(w / f)), max(4, int(h / f))), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    noise = rng.uniform(0, 3 + 7 * d) * (1.5 if night else 1.0)
    img = img + rng.normal(0, noise, img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5 * d:
        quality = int(rng.integers(int(15 + 50 * (1 - d)), 96))
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out


CLUTTER_WORDS = ("TAXI", "STOP", "PARKING", "SERVICE", "DIESEL", "HYBRID", "AUTO", "SPORT", "TURBO",
                 "GARAGE", "SALE", "OPEN", "EXIT", "BUS", "POLICE", "4x4", "GTI", "TDI", "XDRIVE", "LIMITED")


def _paint_clutter(canvas: np.ndarray, rng: np.random.Generator, fonts: list[Path]) -> None:
    """Things on and around cars that are not plates: a badge (an outlined oval with letters in it),
    a sign or van lettering (words, sometimes on a panel), a sticker."""
    h, w = canvas.shape
    kind = rng.integers(3)
    cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
    value = rng.uniform(0, 255)
    if kind == 0:  # a badge
        axes = (int(rng.integers(8, 40)), int(rng.integers(5, 22)))
        cv2.ellipse(canvas, (cx, cy), axes, 0, 0, 360, value, int(rng.integers(1, 4)))
        word = CLUTTER_WORDS[rng.integers(len(CLUTTER_WORDS))]
        mask = _text_mask(word.upper(), str(fonts[rng.integers(len(fonts))]), 24)
        size = max(4, axes[1])
        mask = cv2.resize(mask, (max(2, int(mask.shape[1] * size / mask.shape[0])), size))
        _paint(canvas, mask, cx - mask.shape[1] // 2, cy - size // 2, value)
    else:  # a sign or lettering: one or two lines of words, on a panel half the time
        lines = [" ".join(CLUTTER_WORDS[rng.integers(len(CLUTTER_WORDS))] for _ in range(rng.integers(1, 3)))
                 for _ in range(rng.integers(1, 3))]
        size = int(rng.integers(8, 30))
        masks = [_text_mask(line.upper(), str(fonts[rng.integers(len(fonts))]), size) for line in lines]
        if kind == 1:
            pw = max(m.shape[1] for m in masks) + size
            ph = sum(m.shape[0] for m in masks) + size // 2
            canvas[max(0, cy): cy + ph, max(0, cx): cx + pw] = rng.uniform(0, 255)
        y = cy + size // 4
        for mask in masks:
            _paint(canvas, mask, cx + size // 2, y, value)
            y += mask.shape[0]


@dataclass(frozen=True)
class WindowSample:
    """One training window: image (64x128 uint8), label and the plate's box in window pixels."""

    image: np.ndarray
    present: bool
    text: str
    box: tuple[float, float, float, float]  # plate x0, y0, x1, y1 (meaningful when present)
    kind: str  # "positive" or one of NEGATIVE_KINDS
    centred: bool = False  # framed like a re-read crop; the text is learned from these
    char_x: tuple[float, ...] = ()  # each character's centre x in the window (positives)


def _scale_range(bw: float, bh: float) -> tuple[float, float]:
    """Scales (pixels per unit) that put a bw x bh unit box inside the presence rule's size band."""
    s_min = min(0.6 * WINDOW_W / bw, 0.6 * WINDOW_H / bh)
    s_max = min(0.8 * WINDOW_W / bw, 0.875 * WINDOW_H / bh)
    return s_min * 1.02, s_max * 0.98


def window_offset(kind: str, pw: float, ph: float, rng: np.random.Generator,
                  centred: bool) -> tuple[float, float]:
    """Top-left corner in the window of a plate pw x ph px wide and high, for a window of `kind`
    (positive, too_small, too_big, truncated); `centred`: as the detector's re-read crop frames a
    plate. Shared by the synthetic windows and `anprd finetune`'s windows from the user's photos."""
    if kind == "truncated":  # push it across an edge by 4% .. 60% of its size
        side = rng.integers(4)
        frac = rng.uniform(0.04, 0.6)
        tx = rng.uniform(0, max(0.0, WINDOW_W - pw))
        ty = rng.uniform(0, max(0.0, WINDOW_H - ph))
        if side == 0:
            tx = -frac * pw
        elif side == 1:
            tx = WINDOW_W - (1 - frac) * pw
        elif side == 2:
            ty = -frac * ph
        else:
            ty = WINDOW_H - (1 - frac) * ph
    elif kind == "too_big":
        tx = rng.uniform(min(0.0, WINDOW_W - pw), max(0.0, WINDOW_W - pw))
        ty = rng.uniform(min(0.0, WINDOW_H - ph), max(0.0, WINDOW_H - ph))
    elif centred:  # centred, ~70% of the width
        tx = (WINDOW_W - pw) / 2 + rng.uniform(-4, 4)
        ty = (WINDOW_H - ph) / 2 + rng.uniform(-3, 3)
    else:
        tx = rng.uniform(0, max(0.0, WINDOW_W - pw))
        ty = rng.uniform(0, max(0.0, WINDOW_H - ph))
    return tx, ty


def sample_window(rng: np.random.Generator, backgrounds: Backgrounds, fonts: list[Path],
                  difficulty: float = 1.0, positive_fraction: float = 0.6,
                  centred_fraction: float = 0.5, styled: float = 0.0, fill_low: float = 0.6) -> WindowSample:
    """One random window: positive with probability `positive_fraction`, else a negative of each kind.

    `fill_low` below 0.6 lets the non-centred "positives" be drawn down to that fraction of the
    presence band's lower edge (their label then follows the presence rule: a plate under 60% is a
    too-small negative); the proposal network (`cascade.train_proposer`) learns a wider band.

    A `centred_fraction` of the positives frame the plate as the detector's re-read crop does
    (centred, ~70% wide); only those teach reading (`WindowSample.centred`), so the reader learns
    the framing it is used with, while every positive teaches presence.
    """
    kind = "positive" if rng.random() < positive_fraction else str(
        rng.choice(NEGATIVE_KINDS, p=[0.3, 0.2, 0.2, 0.3]))
    background = backgrounds.crop(WINDOW_W, WINDOW_H).astype(np.float32)
    night = rng.random() < 0.15 * difficulty
    infrared = night and rng.random() < 0.5
    if infrared:
        background *= rng.uniform(0.2, 0.6)
    if kind == "absent":
        if rng.random() < 0.3:  # distractor text that is not a plate
            spec = random_plate_spec(rng)
            mask = _text_mask(spec.text, str(fonts[rng.integers(len(fonts))]), int(rng.integers(8, 40)))
            _paint(background, mask, int(rng.integers(-20, WINDOW_W - 10)),
                   int(rng.integers(-10, WINDOW_H - 10)), rng.uniform(0, 255))
        if styled > 0 and rng.random() < 0.4 * styled:
            _paint_clutter(background, rng, fonts)
        image = _apply_camera(background, rng, difficulty, night)
        return WindowSample(image, False, "", (0.0, 0.0, 0.0, 0.0), kind)

    spec, font = random_plate_and_font(rng, fonts, styled)
    plate_seed = int(rng.integers(2**31))

    def draw(height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # same plate at any resolution
        return render_plate_with_chars(spec, font, height, np.random.default_rng(plate_seed), difficulty,
                                       infrared, CREST_FRACTION)

    canvas, corners, _ = draw(32)
    for _ in range(20):  # draw a pose whose size band exists (extreme yaw can make it empty)
        canvas_pts, plate_pts = _pose_points(corners, canvas.shape[1], canvas.shape[0], rng, difficulty)
        bw, bh = np.ptp(plate_pts[:, 0]), np.ptp(plate_pts[:, 1])
        s_lo, s_hi = _scale_range(bw, bh)
        if s_lo < s_hi:
            break
    centred = kind == "positive" and rng.random() < centred_fraction
    if centred:  # width 62-78% of the window, or the largest that fits the height rule
        scale = min(rng.uniform(0.62, 0.78) * WINDOW_W / bw, s_hi)
        scale = max(scale, s_lo)
    elif kind == "positive" or kind == "truncated":
        scale = math.exp(rng.uniform(math.log(s_lo * min(1.0, fill_low / 0.6)), math.log(s_hi)))
    elif kind == "too_small":
        scale = s_lo * rng.uniform(0.3, 0.92)
    else:
        scale = s_hi * rng.uniform(1.08, 1.8)
    px0, py0 = plate_pts.min(axis=0) * scale
    pw, ph = bw * scale, bh * scale
    tx, ty = window_offset(kind, pw, ph, rng, centred)
    offset = np.array([tx - px0, ty - py0], np.float32)
    plate_win = plate_pts * scale + offset
    box = (float(plate_win[:, 0].min()), float(plate_win[:, 1].min()),
           float(plate_win[:, 0].max()), float(plate_win[:, 1].max()))
    present = presence_label(box)
    if present != (kind == "positive"):  # numerical edge case: trust the rule, relabel
        kind = "positive" if present else "truncated"

    if styled > 0 and rng.random() < ON_CAR_FRACTION * styled:  # over a real plate, on its car
        on_car = backgrounds.crop_on_car(WINDOW_W, WINDOW_H, box)
        if on_car is not None:
            background = on_car.astype(np.float32) * (rng.uniform(0.2, 0.6) if infrared else 1.0)

    # render at about 1.5x the final size so the warp downsamples without aliasing
    canvas, _, char_centres = draw(int(np.clip(scale * 1.5, 10, 140)))
    src = np.array([[0, 0], [canvas.shape[1], 0], [canvas.shape[1], canvas.shape[0]],
                    [0, canvas.shape[0]]], np.float32)
    dst = canvas_pts * scale + offset
    matrix = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    warped = cv2.warpPerspective(canvas, matrix, (WINDOW_W, WINDOW_H), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpPerspective(np.ones_like(canvas), matrix, (WINDOW_W, WINDOW_H),
                                flags=cv2.INTER_LINEAR)
    image = background * (1 - alpha) + warped * alpha
    image = _apply_camera(image, rng, difficulty, night)
    text = spec.text if present else ""
    char_x = cv2.perspectiveTransform(char_centres[None].astype(np.float32), matrix)[0, :, 0]
    return WindowSample(image, present, text, box, kind, centred and present,
                        tuple(float(x) for x in char_x) if present else ())


@dataclass(frozen=True)
class ReadSample:
    """One reader training crop: image (32x128 uint8), text and each character's centre x in it."""

    image: np.ndarray
    text: str
    char_x: tuple[float, ...]


def sample_read_crop(rng: np.random.Generator, backgrounds: Backgrounds, fonts: list[Path],
                     difficulty: float = 1.0, plate_width: tuple[float, float] = (36, 300),
                     styled: float = 0.0, plate_fonts: dict[str, list[Path]] | None = None) -> ReadSample:
    """A plate as the detector hands it to the reader: posed and composited at its size in a camera
    image (`plate_width` pixels wide), degraded there, then cut by `anprd.detector.reader_crop` around
    a box with the detector's errors (edges off by a few percent, the box scaled as `read_scales` do)."""
    from anprd.detector import reader_crop

    spec, font = random_plate_and_font(rng, fonts, styled, plate_fonts=plate_fonts)
    night = rng.random() < 0.15 * difficulty
    infrared = night and rng.random() < 0.5
    target_w = math.exp(rng.uniform(math.log(plate_width[0]), math.log(plate_width[1])))
    aspect = plate_aspect(spec)
    plate_seed = int(rng.integers(2**31))
    canvas, corners, _ = render_plate_with_chars(spec, font, 32, np.random.default_rng(plate_seed),
                                                 difficulty, infrared, CREST_FRACTION)
    canvas_pts, plate_pts = _pose_points(corners, canvas.shape[1], canvas.shape[0], rng, difficulty)
    scale = target_w / np.ptp(plate_pts[:, 0])
    pw, ph = np.ptp(plate_pts[:, 0]) * scale, np.ptp(plate_pts[:, 1]) * scale
    # the scene around the plate: room for the crop's margins and for box errors
    scene_w, scene_h = int(pw * 1.6) + 8, int(ph * 2.2) + 8
    scene = backgrounds.crop(scene_w, scene_h).astype(np.float32)
    if infrared:
        scene *= rng.uniform(0.2, 0.6)
    offset = np.array([(scene_w - pw) / 2, (scene_h - ph) / 2], np.float32) - plate_pts.min(axis=0) * scale
    canvas, _, char_centres = render_plate_with_chars(
        spec, font, int(np.clip(target_w / aspect * 1.5, 10, 160)), np.random.default_rng(plate_seed),
        difficulty, infrared, CREST_FRACTION)
    src = np.array([[0, 0], [canvas.shape[1], 0], [canvas.shape[1], canvas.shape[0]],
                    [0, canvas.shape[0]]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, (canvas_pts * scale + offset).astype(np.float32))
    warped = cv2.warpPerspective(canvas, matrix, (scene_w, scene_h), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpPerspective(np.ones_like(canvas), matrix, (scene_w, scene_h), flags=cv2.INTER_LINEAR)
    scene = _apply_camera(scene * (1 - alpha) + warped * alpha, rng, difficulty, night)

    x0, y0 = plate_pts.min(axis=0) * scale + offset
    x1, y1 = x0 + pw, y0 + ph
    factor = rng.uniform(0.88, 1.12)  # read_scales, and boxes a little too big or small
    cx, cy = (x0 + x1) / 2 + rng.normal(0, 0.02) * pw, (y0 + y1) / 2 + rng.normal(0, 0.05) * ph
    half_w = pw / 2 * factor * math.exp(rng.normal(0, 0.03))
    half_h = ph / 2 * factor * math.exp(rng.normal(0, 0.06))
    crop, (left, _, sx, _) = reader_crop(scene, (cx - half_w, cy - half_h, cx + half_w, cy + half_h))
    char_x = cv2.perspectiveTransform(char_centres[None].astype(np.float32), matrix)[0, :, 0]
    return ReadSample(crop, spec.text, tuple(float((x - left) * sx) for x in char_x))


# --------------------------------------------------------------------------------------------------
# Whole scenes, for `anprd eval` on synthetic data
# --------------------------------------------------------------------------------------------------
def _composite(scene: np.ndarray, canvas: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """`scene` with the plate `canvas` warped onto the quadrilateral `corners` (its 4 corners in
    scene pixels, clockwise from top left)."""
    h, w = scene.shape
    src = np.array([[0, 0], [canvas.shape[1], 0], [canvas.shape[1], canvas.shape[0]], [0, canvas.shape[0]]],
                   np.float32)
    matrix = cv2.getPerspectiveTransform(src, corners.astype(np.float32))
    warped = cv2.warpPerspective(canvas, matrix, (w, h), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpPerspective(np.ones_like(canvas), matrix, (w, h), flags=cv2.INTER_LINEAR)
    return scene * (1 - alpha) + warped * alpha


def sample_scene(rng: np.random.Generator, backgrounds: Backgrounds, fonts: list[Path],
                 size: tuple[int, int] = (960, 540), max_plates: int = 3,
                 plate_width: tuple[float, float] = (70, 260),
                 difficulty: float = 0.6, styled: float = 0.0
                 ) -> tuple[np.ndarray, list[tuple[tuple[int, int, int, int], str]]]:
    """A BGR scene with 1..max_plates non-overlapping plates; returns (image, [((x, y, w, h), text)])."""
    w, h = size
    scene = backgrounds.crop(w, h).astype(np.float32)
    plates: list[tuple[tuple[int, int, int, int], str]] = []
    for _ in range(int(rng.integers(1, max_plates + 1))):
        spec, font = random_plate_and_font(rng, fonts, styled)
        target_w = math.exp(rng.uniform(math.log(plate_width[0]), math.log(plate_width[1])))
        plate_h_px = target_w / plate_aspect(spec)
        canvas, corners = render_plate(spec, font, int(np.clip(plate_h_px * 1.3, 10, 160)), rng,
                                       difficulty * 0.5)
        canvas_pts, plate_pts = _pose_points(corners, canvas.shape[1], canvas.shape[0], rng,
                                             difficulty * 0.6)
        scale = target_w / np.ptp(plate_pts[:, 0])
        pw, ph = np.ptp(plate_pts[:, 0]) * scale, np.ptp(plate_pts[:, 1]) * scale
        for _ in range(20):
            tx, ty = rng.uniform(10, w - pw - 10), rng.uniform(10, h - ph - 10)
            box = (int(tx), int(ty), int(pw), int(ph))
            if all(box[0] > b[0] + b[2] + 20 or b[0] > box[0] + box[2] + 20 or
                   box[1] > b[1] + b[3] + 20 or b[1] > box[1] + box[3] + 20 for b, _ in plates):
                break
        else:
            continue
        offset = np.array([tx, ty]) - plate_pts.min(axis=0) * scale
        scene = _composite(scene, canvas, canvas_pts * scale + offset)
        plates.append((box, spec.text))
    noisy = np.clip(scene + rng.normal(0, 2 + 4 * difficulty, scene.shape), 0, 255).astype(np.uint8)
    if difficulty > 0 and rng.random() < 0.5:
        noisy = cv2.GaussianBlur(noisy, (0, 0), rng.uniform(0.3, 0.3 + 0.8 * difficulty))
    return cv2.cvtColor(noisy, cv2.COLOR_GRAY2BGR), plates


def sample_car_scene(rng: np.random.Generator, backgrounds: Backgrounds, fonts: list[Path],
                     styled: float = 1.0, difficulty: float = 0.5, min_width: int = 50,
                     plate_fonts: dict[str, list[Path]] | None = None
                     ) -> tuple[np.ndarray, list[tuple[tuple[int, int, int, int], str]]] | None:
    """A road frame whose boxed plates (boxes.tsv) are each covered by a synthetic plate on the same
    car: the plate sits where plates sit, among lamps, grilles, badges and other cars. Returns
    (BGR image, [((x, y, w, h), text)]), or None when the frame drawn has a plate narrower than
    `min_width` (left out: a plate too small to cover well would stay readable beside ours)."""
    with_boxes = [path for path, boxes in backgrounds.boxes.items() if boxes]
    if not with_boxes:
        raise FileNotFoundError("no background folder with plate boxes (boxes.tsv), "
                                "e.g. ../shared/data/streets")
    path = with_boxes[rng.integers(len(with_boxes))]
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    boxes = backgrounds.boxes[path]
    if image is None or any(bw < min_width for _, _, bw, _ in boxes):
        return None
    scene = image.astype(np.float32)
    h, w = scene.shape
    plates: list[tuple[tuple[int, int, int, int], str]] = []
    for bx, by, bw, bh in boxes:
        spec, font = random_plate_and_font(rng, fonts, styled, label_as_drawn=False, plate_fonts=plate_fonts)
        aspect = plate_aspect(spec)
        target_w = max(bw * rng.uniform(1.12, 1.3), bh * 1.25 * aspect)  # covers the real plate
        canvas, corners = render_plate(spec, font, int(np.clip(target_w / aspect * 1.3, 10, 160)), rng,
                                       difficulty * 0.5)
        canvas_pts, plate_pts = _pose_points(corners, canvas.shape[1], canvas.shape[0], rng, difficulty * 0.3)
        scale = target_w / np.ptp(plate_pts[:, 0])
        centre = (plate_pts.max(axis=0) + plate_pts.min(axis=0)) / 2 * scale
        offset = np.array([bx + bw / 2, by + bh / 2]) - centre
        scene = _composite(scene, canvas, canvas_pts * scale + offset)
        x0, y0 = plate_pts.min(axis=0) * scale + offset
        x1, y1 = plate_pts.max(axis=0) * scale + offset
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            return None  # a plate cut by the frame's edge: not a fair test of reading
        plates.append(((int(x0), int(y0), int(x1 - x0), int(y1 - y0)), spec.text))
    noisy = np.clip(scene + rng.normal(0, 2 + 4 * difficulty, scene.shape), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        noisy = cv2.GaussianBlur(noisy, (0, 0), rng.uniform(0.3, 0.3 + 0.8 * difficulty))
    return cv2.cvtColor(noisy, cv2.COLOR_GRAY2BGR), plates


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def make_backgrounds(folders: list[Path] | None, builtin: bool, rng: np.random.Generator,
                     balanced: bool = False) -> Backgrounds:
    dirs = list(folders or [])
    if builtin or not dirs:
        dirs += builtin_background_dirs()
    return Backgrounds(dirs, rng, balanced=balanced)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.gen", description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, required=True, help="number of windows (or scenes)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", type=float, default=1.0, help="0 = clean .. 1 = hardest")
    parser.add_argument("--backgrounds", type=Path, action="append",
                        help="folder of background photos (repeatable; a boxes.tsv there marks plates "
                             "to avoid); the photos bundled with scikit-image are always added")
    parser.add_argument("--styled", type=float, default=0.0,
                        help="fraction of plates in national styles (anprd/styles); 1 = all")
    parser.add_argument("--on-cars", action="store_true",
                        help="with --scenes: road frames whose boxed plates are covered by synthetic ones "
                             "(needs a --backgrounds folder with boxes.tsv)")
    parser.add_argument("--countries", help="with --styled: only these countries' styles, e.g. fr,gb")
    parser.add_argument("--unseen-fonts", action="store_true",
                        help="with --on-cars: draw every plate in installed fonts that training never uses "
                             "(train.fonts.UNSEEN_FONTS): lettering new to the reader, as real plates are")
    parser.add_argument("--scenes", action="store_true",
                        help="write whole scenes and a labels.tsv in the format `anprd eval` reads")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be >= 1")
    if args.countries:
        try:
            only_countries([c.strip() for c in args.countries.split(",")])
        except ValueError as exc:
            print(f"train.gen: --countries: {exc}", file=sys.stderr)
            return 2
    try:
        rng = np.random.default_rng(args.seed)
        fonts = available_fonts()
        backgrounds = make_backgrounds(args.backgrounds, True, rng)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"train.gen: {exc}", file=sys.stderr)
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        labels = open(args.out / "labels.tsv", "w", newline="")  # noqa: SIM115 - closed by `with` below
    except OSError as exc:
        print(f"train.gen: cannot write to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    unseen = unseen_fonts() if args.unseen_fonts else None
    with labels as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        if args.scenes:
            writer.writerow(["# file", "x", "y", "w", "h", "PLATE"])
            for i in range(args.count):
                if args.on_cars:
                    drawn = None
                    while drawn is None:
                        drawn = sample_car_scene(rng, backgrounds, unseen or fonts, args.styled,
                                                 args.difficulty, plate_fonts={} if unseen else None)
                    image, plates = drawn
                else:
                    image, plates = sample_scene(rng, backgrounds, fonts, difficulty=args.difficulty,
                                                 styled=args.styled)
                name = f"scene{i:05d}.jpg"
                cv2.imwrite(str(args.out / name), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
                for (x, y, w, h), text in plates:
                    writer.writerow([name, x, y, w, h, text])
        else:
            writer.writerow(["# file", "present", "text", "kind", "x0", "y0", "x1", "y1"])
            for i in range(args.count):
                s = sample_window(rng, backgrounds, fonts, args.difficulty, styled=args.styled)
                name = f"{i:08d}.png"
                cv2.imwrite(str(args.out / name), s.image)
                writer.writerow([name, int(s.present), s.text, s.kind, *(f"{v:.1f}" for v in s.box)])
    print(f"wrote {args.count} {'scenes' if args.scenes else 'windows'} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
