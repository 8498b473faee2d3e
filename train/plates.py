"""Plates of real national styles, rendered from the style library (`anprd/styles/*.yaml`).

`train.gen` draws the rest of a training sample (pose, background, camera); this module draws the
plate itself as its country makes it: size and aspect, paint colours turned to grey as a camera's
sensor does (so a black French plate with silver text stays light-on-dark, and a red Brazilian hire
plate stays dark), the characters in a glyph family that plate makers use (`train.plate_fonts`), and
what surrounds them: the EU band with its stars and country code, a French regional band with its
department number, an Italian province band, the Mercosur band, a Brazilian city strip, US state
names and slogans, registration seals, stickers, screws and borders. Nothing outside the characters
is ever part of the label.

    spec, font = random_styled_plate(rng)                  # a style drawn by weight, text by format
    canvas, corners, centres = render_styled_plate(spec, font, 48, rng)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from anprd.styles import COLOURS, Band, PlateStyle, load_countries

__all__ = ["StyledSpec", "all_styles", "only_countries", "plate_grey", "random_styled_plate",
           "render_styled_plate", "style_by_key"]

SMALL_FONTS = (  # small print on bands and strips (Debian packages the project installs)
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSansNarrow-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
)
SCRIPT_FONT = "/usr/share/fonts/opentype/urw-base35/Z003-MediumItalic.otf"  # California's script name
BR_CITIES = ("SP - SAO PAULO", "RJ - RIO DE JANEIRO", "MG - BELO HORIZONTE", "PR - CURITIBA",
             "RS - PORTO ALEGRE", "BA - SALVADOR", "SC - FLORIANOPOLIS", "GO - GOIANIA", "PE - RECIFE",
             "CE - FORTALEZA", "SP - CAMPINAS", "MG - UBERLANDIA", "DF - BRASILIA", "PA - BELEM")
US_STATES = ("OHIO", "GEORGIA", "ARIZONA", "NEVADA", "OREGON", "IOWA", "MAINE", "UTAH", "VIRGINIA",
             "MICHIGAN", "COLORADO", "MARYLAND", "ALABAMA", "KANSAS", "IDAHO", "NEW JERSEY",
             "WASHINGTON", "MONTANA", "Pennsylvania", "Arizona", "Oregon")
US_SLOGANS = ("dmv.gov", "GREAT LAKES", "EXPLORE", "visitPA.com", "THE PEACH STATE", "WILD WONDERFUL",
              "Grand Canyon State", "PURE MICHIGAN", "LAND OF ENCHANTMENT", "The Garden State")


@dataclass(frozen=True)
class StyledSpec:
    """What to draw: a style (by key), the character groups and the separators between them.

    Has the fields of `train.gen.PlateSpec` (family = the style's key) so the generator treats both
    alike."""

    family: str
    groups: tuple[str, ...]
    separators: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(self.groups)


_ONLY: set[str] = set()  # countries or style keys to draw (empty: all), set by `only_countries`


def only_countries(selectors: list[str]) -> None:
    """Draw styled plates of these countries (`fr`) or styles (`fr-collection`) only, for test sets
    and probes; [] for all again."""
    known = set(load_countries()) | {s.key for c in load_countries().values() for s in c.styles}
    unknown = [c for c in selectors if c not in known]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is no country or style (countries: "
                         f"{', '.join(sorted(load_countries()))}; styles: COUNTRY-NAME)")
    _ONLY.clear()
    _ONLY.update(selectors)
    _style_weights.cache_clear()


def all_styles() -> tuple[PlateStyle, ...]:
    return tuple(style for country in load_countries().values() for style in country.styles
                 if not _ONLY or country.code in _ONLY or style.key in _ONLY)


def style_by_key(key: str) -> PlateStyle | None:
    """Any style of the library by key (`fr-siv`), whatever `only_countries` draws."""
    return next((s for c in load_countries().values() for s in c.styles if s.key == key), None)


@lru_cache(maxsize=1)
def _style_weights() -> np.ndarray:
    """Each country counts the same (the generic EU style as one country); within a country its
    styles' weights share that."""
    styles = all_styles()
    totals: dict[str, float] = {}
    for s in styles:
        totals[s.country] = totals.get(s.country, 0.0) + s.weight
    weights = np.array([s.weight / totals[s.country] for s in styles])
    return weights / weights.sum()


def random_styled_plate(rng: np.random.Generator, plate_fonts: dict[str, list[Path]],
                        other_fonts: list[Path], own_font_share: float = 0.75) -> tuple[StyledSpec, str]:
    """A random plate of a random style, and the font to draw it in: one of the style's glyph
    families (`plate_fonts` by family) `own_font_share` of the time, else any of `other_fonts`."""
    styles = all_styles()
    style = styles[rng.choice(len(styles), p=_style_weights())]
    layout = style.formats[rng.integers(len(style.formats))]
    pools = {"@": style.letters, "#": "0123456789", "?": style.letters + "0123456789"}
    groups = tuple("".join(pools[c][rng.integers(len(pools[c]))] if c in pools else c for c in group)
                   for group in layout.groups)
    families = [f for f in style.glyphs if plate_fonts.get(f)] or [f for f in plate_fonts if plate_fonts[f]]
    if families and (rng.random() < own_font_share or not other_fonts):
        choices = plate_fonts[families[rng.integers(len(families))]]
        font = str(choices[rng.integers(len(choices))])
    else:
        font = str(other_fonts[rng.integers(len(other_fonts))])
    return StyledSpec(style.key, groups, layout.separators), font


def plate_grey(rgb: tuple[int, int, int], weights: np.ndarray) -> float:
    """A paint colour as a camera's grey: a weighted sum of its channels."""
    return float(np.dot(np.asarray(rgb, np.float32), weights))


def _camera_weights(rng: np.random.Generator, infrared: bool) -> np.ndarray:
    """Channel weights of a camera's luminance: BT.601 jittered (sensors, white balance, colour
    filters); an infrared camera sees mostly the red end."""
    base = np.array([0.6, 0.3, 0.1]) if infrared else np.array([0.299, 0.587, 0.114])
    weights = base * np.exp(rng.normal(0, 0.25, 3))
    return weights / weights.sum()


@lru_cache(maxsize=256)
def _small_text(text: str, font_path: str, slant: float = 0.0) -> np.ndarray:
    """White-on-black mask of a line of small print, cropped to its ink."""
    font = ImageFont.truetype(font_path, 48)
    left, top, right, bottom = font.getbbox(text)
    pad = int(abs(slant) * (bottom - top)) + 2
    im = Image.new("L", (right - left + 2 * pad, bottom - top + 4), 0)
    ImageDraw.Draw(im).text((pad - left, 2 - top), text, font=font, fill=255)
    mask = np.asarray(im)
    if slant:
        h, w = mask.shape
        shear = np.float32([[1, -slant, slant * h / 2], [0, 1, 0]])
        mask = cv2.warpAffine(mask, shear, (w, h))
    ys, xs = np.nonzero(mask > 40)
    if len(xs) == 0:
        return np.zeros((4, 4), np.uint8)
    return mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]


def _paint_mask(canvas: np.ndarray, mask: np.ndarray, box: tuple[float, float, float, float],
                value: float, keep_aspect: bool = True) -> None:
    """Scale `mask` into box (x0, y0, x1, y1) of canvas, centred, and blend `value` through it."""
    x0, y0, x1, y1 = box
    bw, bh = max(1.0, x1 - x0), max(1.0, y1 - y0)
    if keep_aspect:
        scale = min(bw / mask.shape[1], bh / mask.shape[0])
        w, h = max(1, int(mask.shape[1] * scale)), max(1, int(mask.shape[0] * scale))
    else:
        w, h = int(bw), int(bh)
    resized = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    left, top = int(x0 + (bw - w) / 2), int(y0 + (bh - h) / 2)
    xa, ya = max(left, 0), max(top, 0)
    xb, yb = min(left + w, canvas.shape[1]), min(top + h, canvas.shape[0])
    if xb <= xa or yb <= ya:
        return
    alpha = resized[ya - top: yb - top, xa - left: xb - left]
    region = canvas[ya:yb, xa:xb]
    region[:] = region * (1 - alpha) + value * alpha


def _stars(canvas: np.ndarray, cx: float, cy: float, radius: float, value: float) -> None:
    dot = max(1, int(round(radius * 0.16)))
    for k in range(12):
        a = 2 * math.pi * k / 12
        cv2.circle(canvas, (int(cx + radius * math.cos(a)), int(cy + radius * math.sin(a))), dot, value, -1)


def _side_band(canvas: np.ndarray, band: Band, side: str, rng: np.random.Generator, grey: np.ndarray
               ) -> int:
    """Paint a band at the plate's left or right edge; returns its width in pixels."""
    h, w = canvas.shape
    band_w = max(3, int(h * rng.uniform(0.36, 0.46)))
    x0 = 0 if side == "left" else w - band_w
    blue = plate_grey(COLOURS["eu_blue"], grey) * rng.uniform(0.8, 1.3)
    white, yellow = plate_grey(COLOURS["white"], grey), plate_grey(COLOURS["yellow"], grey)
    font = SMALL_FONTS[rng.integers(2)]
    if band.kind == "flash":  # UK zero-emission flash: a plain green strip
        canvas[:, x0: x0 + band_w] = plate_grey(COLOURS["green"], grey)
        return band_w
    if band.kind == "flag":  # UK: a flag over the country code
        canvas[:, x0: x0 + band_w] = blue
        top = int(h * 0.1), int(h * 0.45)
        cv2.rectangle(canvas, (x0 + band_w // 6, top[0]), (x0 + band_w * 5 // 6, top[1]), white, -1)
        t = max(1, h // 20)
        cv2.line(canvas, (x0 + band_w // 2, top[0]), (x0 + band_w // 2, top[1]), 90.0, t)
        cv2.line(canvas, (x0 + band_w // 6, sum(top) // 2), (x0 + band_w * 5 // 6, sum(top) // 2), 90.0, t)
    elif band.kind == "eu":
        canvas[:, x0: x0 + band_w] = blue
        _stars(canvas, x0 + band_w / 2, h * 0.3, band_w * 0.3, yellow)
    elif band.kind == "region":  # France: a regional emblem over the department number
        canvas[:, x0: x0 + band_w] = blue
        emblem = np.zeros((32, 24), np.uint8)
        for _ in range(int(rng.integers(2, 5))):  # a few shapes: the logos are coloured drawings
            c = (int(rng.integers(3, 21)), int(rng.integers(3, 29)))
            cv2.ellipse(emblem, c, (int(rng.integers(2, 10)), int(rng.integers(2, 10))),
                        float(rng.uniform(0, 180)), 0, 360, int(rng.integers(100, 256)), -1)
        _paint_mask(canvas, emblem, (x0 + band_w * 0.12, h * 0.08, x0 + band_w * 0.88, h * 0.55),
                    rng.uniform(150, 255), keep_aspect=False)
        dept = str(rng.choice([f"{rng.integers(1, 96):02d}", "2A", "2B", f"97{rng.integers(1, 7)}"],
                              p=[0.9, 0.03, 0.03, 0.04]))
        _paint_mask(canvas, _small_text(dept, font), (x0 + band_w * 0.1, h * 0.6, x0 + band_w * 0.9,
                                                       h * 0.9), white)
        return band_w
    elif band.kind == "year_province":  # Italy: year at the top, province code at the bottom
        canvas[:, x0: x0 + band_w] = blue
        if rng.random() < 0.6:
            _paint_mask(canvas, _small_text(f"{rng.integers(0, 100):02d}", font),
                        (x0 + band_w * 0.2, h * 0.1, x0 + band_w * 0.8, h * 0.35), yellow)
        if rng.random() < 0.7:
            province = "".join(chr(65 + rng.integers(26)) for _ in range(2))
            _paint_mask(canvas, _small_text(province, font),
                        (x0 + band_w * 0.1, h * 0.6, x0 + band_w * 0.9, h * 0.88), white)
        return band_w
    codes = band.options.get("codes") or ["EU"]
    code = str(codes[rng.integers(len(codes))])
    _paint_mask(canvas, _small_text(code, font), (x0 + band_w * 0.1, h * 0.58, x0 + band_w * 0.9, h * 0.9),
                white if rng.random() < 0.8 else yellow)
    return band_w


def _strip(canvas: np.ndarray, band: Band, text_lum: float, rng: np.random.Generator,
           grey: np.ndarray, y0: float, y1: float) -> None:
    """Small print across the plate between rows y0 and y1: a city, a state or a slogan."""
    h, w = canvas.shape
    options = band.options
    slant = 0.0
    font = SMALL_FONTS[rng.integers(len(SMALL_FONTS))]
    if band.kind == "city":
        text = BR_CITIES[rng.integers(len(BR_CITIES))]
        cv2.line(canvas, (int(w * 0.02), int(y1)), (int(w * 0.98), int(y1)), text_lum, max(1, h // 60))
    elif band.kind == "state":
        names = options.get("names") or US_STATES
        text = str(names[rng.integers(len(names))])
        if options.get("script") and Path(SCRIPT_FONT).is_file():
            font = SCRIPT_FONT
        elif rng.random() < 0.3:
            slant = 0.25
    else:
        texts = options.get("texts") or US_SLOGANS
        text = str(texts[rng.integers(len(texts))])
    colour = COLOURS[str(rng.choice(["dark_red", "dark_blue", "black", "red"]))] \
        if band.kind != "city" else None
    value = plate_grey(colour, grey) if colour else text_lum
    width = w * (rng.uniform(0.3, 0.6) if band.kind == "city" else rng.uniform(0.35, 0.8))
    _paint_mask(canvas, _small_text(text, font, slant), ((w - width) / 2, y0, (w + width) / 2, y1), value)


def _mercosur_band(canvas: np.ndarray, rng: np.random.Generator, grey: np.ndarray) -> int:
    h, w = canvas.shape
    band_h = max(2, int(h * rng.uniform(0.2, 0.25)))
    canvas[:band_h] = plate_grey(COLOURS["eu_blue"], grey)
    white = plate_grey(COLOURS["white"], grey)
    _paint_mask(canvas, _small_text("BRASIL", SMALL_FONTS[0]),
                (w * 0.3, band_h * 0.15, w * 0.7, band_h * 0.85), white)
    cv2.circle(canvas, (int(w * 0.08), band_h // 2), max(1, band_h // 3), white * 0.8, -1)  # emblem
    cv2.rectangle(canvas, (int(w * 0.86), int(band_h * 0.2)), (int(w * 0.95), int(band_h * 0.8)),
                  plate_grey(COLOURS["green"], grey), -1)  # the flag
    if rng.random() < 0.7:
        _paint_mask(canvas, _small_text("BR", SMALL_FONTS[0]), (w * 0.02, h * 0.75, w * 0.09, h * 0.95),
                    plate_grey(COLOURS["black"], grey))
    return band_h


def render_styled_plate(spec: StyledSpec, font_path: str, plate_h: int, rng: np.random.Generator,
                        difficulty: float = 1.0, infrared: bool = False
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render `spec` in its style: (canvas, plate corners, character centres), as
    `train.gen.render_plate_with_chars` returns them (holder, dirt and occlusion are added there)."""
    from train.gen import _fit_text, _text_strip  # the generator's text layout, shared

    style = style_by_key(spec.family)
    if style is None:
        raise KeyError(f"no plate style {spec.family!r}")
    grey = _camera_weights(rng, infrared)
    plate_rgb = style.plate_colours[rng.integers(len(style.plate_colours))]
    text_rgb = style.text_colours[rng.integers(len(style.text_colours))]
    wear = rng.uniform(0.85, 1.05)  # faded paint, dirt film, reflective sheeting
    plate_lum = min(255.0, plate_grey(plate_rgb, grey) * wear)
    text_lum = plate_grey(text_rgb, grey) * rng.uniform(0.9, 1.1)
    if infrared and text_lum < plate_lum:  # retroreflective ground glows, the ink stays dark
        plate_lum = rng.uniform(215, 255)
    aspect = style.aspect * rng.uniform(0.97, 1.03)
    plate_w = max(8, int(round(plate_h * aspect)))
    canvas = np.full((plate_h, plate_w), plate_lum, np.float32)

    left = right = 0
    for band, side in ((style.left_band, "left"), (style.flash, "left"), (style.right_band, "right")):
        if band is not None and rng.random() < band.probability and not (side == "left" and left):
            width = _side_band(canvas, band if band is not style.flash else Band("flash"), side, rng, grey)
            left, right = (width, right) if side == "left" else (left, width)
    top = 0
    if style.top_band is not None and rng.random() < style.top_band.probability:
        top = _mercosur_band(canvas, rng, grey)
    text_h = style.text_height * plate_h * rng.uniform(0.94, 1.04)
    centre = style.text_centre * plate_h + rng.normal(0, 0.01) * plate_h
    y0, y1 = max(top + 1.0, centre - text_h / 2), min(plate_h - 1.0, centre + text_h / 2)
    if style.top_strip is not None and rng.random() < style.top_strip.probability:
        _strip(canvas, style.top_strip, text_lum, rng, grey, max(top, plate_h * 0.04), y0 - plate_h * 0.04)
    if style.bottom_strip is not None and rng.random() < style.bottom_strip.probability:
        _strip(canvas, style.bottom_strip, text_lum, rng, grey, y1 + plate_h * 0.03, plate_h * 0.95)

    separators = spec.separators
    if style.seals and len(spec.groups) > 1 and rng.random() < style.seals:
        separators = ("seals", *separators[1:])
    strip, strip_centres = _text_strip(StyledSpec(spec.family, spec.groups, separators), font_path,
                                       int(np.clip(text_h, 10, 160)), rng)
    margin = plate_h * rng.uniform(0.06, 0.14)
    box = (int(left + margin), int(y0), int(plate_w - right - margin), int(y1))
    x_offset, x_scale, y_centre = _fit_text(canvas, strip, box, text_lum, rng)
    centres = np.array([[x_offset + c * x_scale, y_centre] for c in strip_centres], np.float32)

    if rng.random() < 0.5:  # printed or embossed border in the text colour
        t = max(1, plate_h // 40)
        cv2.rectangle(canvas, (t, t), (plate_w - 1 - t, plate_h - 1 - t), text_lum, t)
    if style.top_strip is not None and style.top_strip.kind == "state" and rng.random() < 0.4:
        sx = int(plate_w * (0.04 if rng.random() < 0.5 else 0.8))  # a registration sticker
        sw, sh = int(plate_w * 0.16), int(plate_h * 0.18)
        cv2.rectangle(canvas, (sx, int(plate_h * 0.04)), (sx + sw, int(plate_h * 0.04) + sh),
                      rng.uniform(40, 230), -1)
    if rng.random() < 0.4 * difficulty + 0.1:  # screws or rivets, often painted like what is under them
        r = max(1, plate_h // 22)
        ys = int(plate_h * rng.uniform(0.1, 0.3))
        value = plate_lum if rng.random() < 0.5 else rng.uniform(90, 220)
        for xs in (int(plate_w * rng.uniform(0.18, 0.3)), int(plate_w * rng.uniform(0.7, 0.82))):
            cv2.circle(canvas, (xs, ys), r, value, -1)
            cv2.circle(canvas, (xs, ys), r, value * 0.7, 1)
    corners = np.array([[0, 0], [plate_w, 0], [plate_w, plate_h], [0, plate_h]], np.float32)
    return canvas, corners, centres
