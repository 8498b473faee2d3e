"""Plate styles by country: the data behind both the synthetic plate generator and the decoder's formats.

Each `<country>.yaml` in this folder describes how that country's plates look: size, colours (and so
polarity), where the characters sit, which glyph families draw them, the bands and strips around
them, and the character formats with their separators. `train.gen` renders plates from it;
`anprd.formats` turns the same formats into the reading prior `detector.countries` switches on.
Adding a country is adding a file.

Format strings: `@` a letter (from the style's `letters`, else A-Z), `#` a digit, `?` either, any other
letter or digit itself; `{n}` / `{m,n}` after one of them repeats it. Separators, drawn but never part
of the text: `-` hyphen, ` ` space, `.` dot, `~` registration seals or a sticker, `*` an emblem.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from anprd.errors import AnprdError

__all__ = ["COLOURS", "Band", "Country", "PlateFormat", "PlateStyle", "StyleError", "country_code",
           "load_countries", "parse_format"]

STYLE_DIR = Path(__file__).parent
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
SEPARATORS = {"-": "-", " ": " ", ".": "dot", "~": "seals", "*": "emblem"}
MAX_TEXT = 10

# plate paint as sRGB; the generator turns them to grey as a camera does (`train.gen`)
COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (242, 242, 236), "yellow": (250, 204, 24), "black": (22, 22, 24), "silver": (192, 194, 198),
    "grey": (168, 170, 172), "light_grey": (205, 207, 210), "red": (190, 30, 36), "blue": (0, 60, 150),
    "dark_blue": (18, 36, 96), "light_blue": (170, 200, 230), "green": (0, 120, 60),
    "dark_green": (10, 80, 40), "dark_red": (120, 20, 30), "eu_blue": (0, 51, 153),
}


class StyleError(AnprdError):
    """A style file that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class PlateFormat:
    """One concrete layout: groups of class symbols (@ # ? or a literal) and the separators between."""

    spec: str
    groups: tuple[str, ...]
    separators: tuple[str, ...]  # names from SEPARATORS' values, len(groups) - 1

    @property
    def classes(self) -> str:
        """The symbols without separators: the decoder's pattern."""
        return "".join(self.groups)


@dataclass(frozen=True)
class Band:
    """A band or strip beside the characters: `kind` and its options (codes, names, probability...)."""

    kind: str
    probability: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlateStyle:
    country: str
    name: str
    weight: float
    size_mm: tuple[float, float]
    plate_colours: tuple[tuple[int, int, int], ...]
    text_colours: tuple[tuple[int, int, int], ...]
    text_height: float  # of the plate's height
    text_centre: float  # vertical centre of the characters, as a fraction of the height
    glyphs: tuple[str, ...]
    formats: tuple[PlateFormat, ...]
    letters: str
    left_band: Band | None = None
    right_band: Band | None = None
    top_band: Band | None = None
    top_strip: Band | None = None
    bottom_strip: Band | None = None
    flash: Band | None = None
    seals: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.country}-{self.name}"

    @property
    def aspect(self) -> float:
        return self.size_mm[0] / self.size_mm[1]

    @property
    def band_marks(self) -> tuple[str, str]:
        """Regular expressions for what a reader may see of this style's bands before and after
        the text ("" where there is no band): the country code under the EU stars or a flag, a
        French department number (up to 3 characters: 974, 2A), an Italian province or year."""
        left = ""
        if self.left_band is not None and self.left_band.options.get("codes"):
            left = "|".join(re.escape(str(c)) for c in self.left_band.options["codes"])
        right = {"region": r"[0-9]{2,3}|2[AB]", "year_province": r"[A-Z]{2}|[0-9]{2}"}.get(
            self.right_band.kind, "") if self.right_band is not None else ""
        return left, right


@dataclass(frozen=True)
class Country:
    code: str
    name: str
    aliases: tuple[str, ...]
    styles: tuple[PlateStyle, ...]
    decoder: bool  # whether its formats may serve as a reading prior

    def patterns(self) -> list[tuple[tuple[frozenset[str], ...], str, str]]:
        """Every format of every style as per-position sets of allowed characters, with what its
        bands may add before and after the text (`PlateStyle.band_marks`, joined over styles)."""
        found: dict[tuple[frozenset[str], ...], tuple[set[str], set[str]]] = {}
        for style in self.styles:
            left, right = style.band_marks
            for fmt in style.formats:
                marks = found.setdefault(_position_sets(fmt.classes, style.letters), (set(), set()))
                marks[0].update(filter(None, [left]))
                marks[1].update(filter(None, [right]))
        return [(sets, "|".join(sorted(left)), "|".join(sorted(right)))
                for sets, (left, right) in found.items()]


def _position_sets(classes: str, letters: str) -> tuple[frozenset[str], ...]:
    pools = {"@": frozenset(letters), "#": frozenset(DIGITS), "?": frozenset(letters + DIGITS)}
    return tuple(pools.get(c, frozenset(c)) for c in classes)


_TOKEN = re.compile(r"([@#?A-Z0-9])(?:\{(\d+)(?:,(\d+))?\})?|([-\s.~*])")


def parse_format(spec: str, max_length: int = MAX_TEXT) -> list[PlateFormat]:
    """`"@{1,3}~@{1,2} #{1,4}"` -> every concrete layout no longer than max_length characters."""
    pos, items = 0, []  # items: ("class", symbol, min, max) or ("sep", name)
    while pos < len(spec):
        match = _TOKEN.match(spec, pos)
        if not match:
            raise ValueError(f"format {spec!r}: {spec[pos]!r} is not @, #, ?, a letter, a digit or a "
                             f"separator ({''.join(SEPARATORS)!r})")
        symbol, low, high, sep = match.groups()
        if sep is not None:
            items.append(("sep", SEPARATORS[sep]))
        else:
            lo = int(low) if low else 1
            hi = int(high) if high else lo
            if not 1 <= lo <= hi:
                raise ValueError(f"format {spec!r}: bad repeat {{{low},{high}}}")
            items.append(("class", symbol, lo, hi))
        pos = match.end()
    classes = [item for item in items if item[0] == "class"]
    layouts = []
    for counts in itertools.product(*(range(c[2], c[3] + 1) for c in classes)):
        groups, seps, current, k = [], [], "", 0
        for item in items:
            if item[0] == "sep":
                if current:
                    groups.append(current)
                    seps.append(item[1])
                    current = ""
            else:
                current += item[1] * counts[k]
                k += 1
        if current:
            groups.append(current)
        text_len = sum(map(len, groups))
        if not groups or text_len > max_length:
            continue
        layouts.append(PlateFormat(spec, tuple(groups), tuple(seps[: len(groups) - 1])))
    if not layouts:
        raise ValueError(f"format {spec!r}: no layout of at most {max_length} characters")
    return layouts


def _colours(value: Any, where: str) -> tuple[tuple[int, int, int], ...]:
    values = value if isinstance(value, list) and value and not isinstance(value[0], int) else [value]
    out = []
    for v in values:
        if isinstance(v, str) and v in COLOURS:
            out.append(COLOURS[v])
        elif isinstance(v, list) and len(v) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in v):
            out.append((v[0], v[1], v[2]))
        else:
            raise ValueError(f"{where}: {v!r} is not a colour name ({', '.join(COLOURS)}) or [r, g, b]")
    return tuple(out)


def _band(value: Any, where: str) -> Band | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping (kind, probability, options)")
    options = {k: v for k, v in value.items() if k not in ("kind", "probability")}
    probability = float(value.get("probability", 1.0))
    if not 0 <= probability <= 1:
        raise ValueError(f"{where}.probability: must be between 0 and 1")
    return Band(str(value.get("kind", where.rsplit(".", 1)[-1])), probability, options)


STYLE_KEYS = {"weight", "size_mm", "plate", "text", "text_height", "text_centre", "glyphs", "formats",
              "letters", "max_length", "left_band", "right_band", "top_band", "top_strip", "bottom_strip",
              "flash", "seals"}


def _style(country: str, name: str, data: dict[str, Any], where: str) -> PlateStyle:
    unknown = set(data) - STYLE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    for key in ("size_mm", "plate", "text", "formats"):
        if key not in data:
            raise ValueError(f"{where}: missing {key!r}")
    letters = str(data.get("letters", LETTERS))
    if not letters or set(letters) - set(LETTERS):
        raise ValueError(f"{where}.letters: only A-Z allowed")
    max_length = int(data.get("max_length", MAX_TEXT))
    formats: list[PlateFormat] = []
    for spec in data["formats"]:
        try:
            formats += parse_format(str(spec), max_length)
        except ValueError as exc:
            raise ValueError(f"{where}.formats: {exc}") from None
    size = data["size_mm"]
    if not (isinstance(size, list) and len(size) == 2 and all(float(s) > 0 for s in size)):
        raise ValueError(f"{where}.size_mm: expected [width, height] in mm")
    return PlateStyle(
        country=country, name=name, weight=float(data.get("weight", 1.0)),
        size_mm=(float(size[0]), float(size[1])),
        plate_colours=_colours(data["plate"], f"{where}.plate"),
        text_colours=_colours(data["text"], f"{where}.text"),
        text_height=float(data.get("text_height", 0.68)), text_centre=float(data.get("text_centre", 0.5)),
        glyphs=tuple(data.get("glyphs", ["any"])), formats=tuple(formats), letters=letters,
        left_band=_band(data.get("left_band"), f"{where}.left_band"),
        right_band=_band(data.get("right_band"), f"{where}.right_band"),
        top_band=_band(data.get("top_band"), f"{where}.top_band"),
        top_strip=_band(data.get("top_strip"), f"{where}.top_strip"),
        bottom_strip=_band(data.get("bottom_strip"), f"{where}.bottom_strip"),
        flash=_band(data.get("flash"), f"{where}.flash"),
        seals=float(data.get("seals", 0.0)))


def _country(path: Path) -> Country:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise StyleError(f"{path}: {exc}") from None
    try:
        if not isinstance(data, dict) or not isinstance(data.get("styles"), dict) or not data["styles"]:
            raise ValueError("expected 'country', 'name' and a non-empty 'styles' mapping")
        code = str(data.get("country", ""))
        if code != path.stem:
            raise ValueError(f"country: {code!r} must match the file name {path.stem!r}")
        styles = tuple(_style(code, str(name), body or {}, f"styles.{name}")
                       for name, body in data["styles"].items())
    except (ValueError, TypeError) as exc:
        raise StyleError(f"{path}: {exc}") from None
    return Country(code, str(data.get("name", code)), tuple(data.get("aliases", [])), styles,
                   bool(data.get("decoder", True)))


@lru_cache(maxsize=4)
def load_countries(folder: Path = STYLE_DIR) -> dict[str, Country]:
    """Every `<code>.yaml` in `folder`, by country code."""
    return {path.stem: _country(path) for path in sorted(folder.glob("*.yaml"))}


def country_code(code: str, countries: dict[str, Country] | None = None) -> str:
    """A configured country as its style file's code (`uk` -> `gb`); raises ValueError naming it."""
    countries = load_countries() if countries is None else countries
    wanted = code.strip().lower()
    for country in countries.values():
        if country.decoder and (wanted == country.code or wanted in country.aliases):
            return country.code
    known = sorted(c.code for c in countries.values() if c.decoder)
    raise ValueError(f"{code!r} is not a country with plate formats (known: {', '.join(known)})")
