"""Procedural plate fonts (train/plate_fonts.py): every glyph renders with Pillow, counters stay hollow,
the plate glyph variants really differ, builds are deterministic and cached, the CLI fails cleanly, and
the generator renders plates with a built font."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

from train.plate_fonts import (
    _EPOCH,
    CHARSET,
    FAMILIES,
    VARIANTS,
    PlateFontStyle,
    build_font,
    build_plate_fonts,
    main,
    random_style,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict[str, PlateFontStyle]]:
    """One font per family (families are taken in turn), with the styles its manifest records."""
    out = tmp_path_factory.mktemp("plate-fonts")
    paths = build_plate_fonts(out, len(FAMILIES), seed=5)
    manifest = json.loads((out / "manifest.json").read_text())
    fonts = {e["family"]: out / e["file"] for e in manifest["fonts"]}
    styles = {e["family"]: PlateFontStyle.from_dict(e["style"]) for e in manifest["fonts"]}
    assert sorted(paths) == sorted(fonts.values())
    return fonts, styles


# A few fonts of one DIN-family style that between them hold every variant the tests compare.
VARIANT_SETS = (
    dict(_1="bar", I="bar", W="wide", M="low", Q="short", _0="slit", K="stem", G="plain", _7="straight",
         B="flat", Z="plain", _6="curved", D="plain", O="oval", _8="round", N="plain", R="mid", _4="closed"),
    dict(_1="flag", I="serif", W="narrow_high", M="mid", Q="long", _0="slashed", K="arm", G="spur",
         _7="kinked", B="round", Z="crossed", _6="straight", D="spurs", O="rrect", _8="stacked", N="inset",
         R="stem", _4="open"),
    dict(_1="flag_foot", W="narrow_low", Q="inside", _0="dotted", B="spurs", _4="vertical"),
    dict(_0="rrect"),
    dict(_0="oval"),
)


@pytest.fixture(scope="module")
def variant_font(tmp_path_factory: pytest.TempPathFactory):
    """variant_font(W="wide") -> the path of a built font that draws W as "wide" (digits as `_1`)."""
    out = tmp_path_factory.mktemp("variants")
    base = random_style(np.random.default_rng(3), "din")
    paths = [build_font(base.with_variants(**changes), out / f"v{i}.ttf")
             for i, changes in enumerate(VARIANT_SETS)]

    def find(**want: str) -> Path:
        (key, name), = want.items()
        return next(p for p, changes in zip(paths, VARIANT_SETS, strict=True) if changes.get(key) == name)

    return find


def _render(font_path: Path, char: str, size: int = 200) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Ink mask of `char` (uncropped, 10 px border) and Pillow's bbox for it."""
    font = ImageFont.truetype(str(font_path), size)
    box = font.getbbox(char)
    left, top, right, bottom = box
    im = Image.new("L", (max(right - left, 1) + 20, max(bottom - top, 1) + 20), 0)
    ImageDraw.Draw(im).text((10 - left, 10 - top), char, font=font, fill=255)
    return np.asarray(im) > 127, box


def _ink(font_path: Path, char: str, size: int = 200) -> np.ndarray:
    mask, _ = _render(font_path, char, size)
    ys, xs = np.nonzero(mask)
    assert len(xs), f"{char!r} has no ink in {font_path.name}"
    return mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]


def _holes(ink: np.ndarray, min_area: int = 30) -> int:
    """Background regions enclosed by ink (counters), ignoring anti-aliasing specks."""
    bg = np.pad(~ink, 1, constant_values=True).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(bg, connectivity=4)
    outside = labels[0, 0]
    return sum(1 for k in range(1, n) if k != outside and stats[k, cv2.CC_STAT_AREA] >= min_area)


def _fill(ink: np.ndarray) -> float:
    """Area inside the outer outline, as a fraction of the bounding box."""
    contours, _ = cv2.findContours(ink.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return max(cv2.contourArea(c) for c in contours) / ((ink.shape[0] - 1) * (ink.shape[1] - 1))


def _same_size(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = (48, 64)
    return (cv2.resize(a.astype(np.float32), size, interpolation=cv2.INTER_AREA),
            cv2.resize(b.astype(np.float32), size, interpolation=cv2.INTER_AREA))


# ------------------------------------------------------------------------------------------------------
def test_every_char_renders_with_pillow(built):
    fonts, _ = built
    assert set(fonts) == set(FAMILIES)
    for path in fonts.values():
        font = ImageFont.truetype(str(path), 64)
        _, cap_top, _, cap_bottom = font.getbbox("0AHM")
        assert cap_bottom - cap_top > 40
        for char in CHARSET:
            ink = _ink(path, char, 96)
            assert ink.sum() > 50, (path.name, char)
            # the advance covers the ink (Q's tail may reach into the side bearing)
            assert font.getlength(char) > ink.shape[1] * 64 / 96 * 0.9, (path.name, char)
        assert font.getlength(" ") > 5
        left, top, right, bottom = font.getbbox(" ")
        assert right <= left or bottom <= top or _render(path, " ", 64)[0].sum() == 0  # space: no ink


EXPECTED_HOLES = {"O": 1, "D": 1, "P": 1, "R": 1, "A": 1, "Q": 1, "6": 1, "9": 1, "B": 2, "8": 2}
ZERO_HOLES = {"oval": 1, "rrect": 1, "same_as_O": 1, "dotted": 1, "slashed": 2, "slit": 0}
FOUR_HOLES = {"closed": 1, "open": 0, "vertical": 0}


def test_counters_are_hollow(built):
    fonts, styles = built
    for family, path in fonts.items():
        style = styles[family]
        for char, holes in EXPECTED_HOLES.items():
            assert _holes(_ink(path, char)) == holes, (family, char)
        assert _holes(_ink(path, "0")) == ZERO_HOLES[style.variant("0")], (family, style.variant("0"))
        assert _holes(_ink(path, "4")) == FOUR_HOLES[style.variant("4")], (family, style.variant("4"))
        o = _ink(path, "O")
        assert not o[o.shape[0] // 2, o.shape[1] // 2], family  # the centre of O is background
        for char in "8B":  # the middle of each bowl's counter is background
            ink = _ink(path, char)
            h, w = ink.shape
            col = (w // 2 + w // 12) if char == "B" else w // 2
            assert not ink[int(h * 0.27), col] and not ink[int(h * 0.74), col], (family, char)


def test_counters_stay_open_in_extreme_styles():
    """Narrowest and thickest, widest and thinnest, round and square ends: every variant of every
    character with a counter keeps its counters (drawn and traced, without a font file)."""
    from train.plate_fonts import _contours, _draw, _raster

    base = random_style(np.random.default_rng(0), "any")
    extremes = [dataclasses.replace(base, letter_width=0.45, digit_width=0.45, stroke=0.1323, oval_curves=o,
                                    round_ends=r, roundness=rd, proportional=0.0)
                for o, r, rd in ((True, False, 1.0), (False, True, 0.25), (False, False, 0.6))]
    extremes.append(dataclasses.replace(base, letter_width=0.68, digit_width=0.68, stroke=0.1,
                                        oval_curves=False, round_ends=False, roundness=0.3))
    holes_of = {**{c: {"": n} for c, n in EXPECTED_HOLES.items()}, "0": ZERO_HOLES, "4": FOUR_HOLES}
    for style in extremes:
        for char, table in holes_of.items():
            for variant in VARIANTS.get(char, ("",)):
                key = f"_{char}" if char.isdigit() else char
                st = style.with_variants(**{key: variant}) if variant else style
                expected = table.get(variant, table.get(""))
                img = _raster(_draw(st, char)) >= 128
                assert _holes(img, min_area=60) == expected, (char, variant, style)
                polys = _contours(_raster(_draw(st, char)), 0.0)
                ys = [y for poly in polys for _, y in poly]
                assert max(ys) <= 702 and (min(ys) >= -2 or char == "Q"), (char, variant)


def test_bar_one_flag_one_and_serif_i_differ(variant_font):
    bar, flag, foot = (_ink(variant_font(_1=v), "1") for v in ("bar", "flag", "flag_foot"))
    assert bar.shape[1] < 0.25 * bar.shape[0]  # a bare bar: narrow for its height
    assert flag.shape[1] > 1.8 * bar.shape[1] and foot.shape[1] > 1.8 * bar.shape[1]
    a, b = _same_size(flag, foot)
    assert np.abs(a - b).mean() > 0.03
    # a flag sits at the top left: the bar's top-left corner is empty, the flag's is not
    assert flag[int(flag.shape[0] * 0.2), : flag.shape[1] // 3].any()
    assert foot[-3:, :].sum(axis=1).max() > 0.8 * foot.shape[1]  # the foot spans the glyph
    i_bar, i_serif = _ink(variant_font(I="bar"), "I"), _ink(variant_font(I="serif"), "I")
    assert i_serif.shape[1] > 2 * i_bar.shape[1]


def test_letter_variants_differ(variant_font):
    wide, narrow = _ink(variant_font(W="wide"), "W"), _ink(variant_font(W="narrow_high"), "W")
    assert wide.shape[1] > 1.15 * narrow.shape[1]
    low = _ink(variant_font(W="narrow_low"), "W")
    # the middle apex of a low W ends near mid-height: the centre column is empty at 30% from the top
    assert not low[int(low.shape[0] * 0.3), low.shape[1] // 2]
    assert narrow[int(narrow.shape[0] * 0.3), narrow.shape[1] // 2]
    m_low, m_mid = _ink(variant_font(M="low"), "M"), _ink(variant_font(M="mid"), "M")
    assert m_low[-3, m_low.shape[1] // 2] and not m_mid[-3, m_mid.shape[1] // 2]
    pairs = {"K": ("stem", "arm"), "G": ("plain", "spur"), "7": ("straight", "kinked"),
             "B": ("flat", "round"), "Z": ("plain", "crossed"), "6": ("curved", "straight"),
             "D": ("plain", "spurs"),
             "O": ("oval", "rrect"), "8": ("round", "stacked"), "N": ("plain", "inset"), "R": ("mid", "stem")}
    for char, (v1, v2) in pairs.items():
        key = f"_{char}" if char.isdigit() else char
        a, b = _same_size(_ink(variant_font(**{key: v1}), char), _ink(variant_font(**{key: v2}), char))
        assert np.abs(a - b).mean() > 0.02, (char, v1, v2)


def test_q_tails(variant_font):
    boxes = {}
    for v in ("short", "long", "inside"):
        path = variant_font(Q=v)
        font = ImageFont.truetype(str(path), 200)
        boxes[v] = (font.getbbox("Q")[3] - font.getbbox("O")[3], font.getbbox("Q")[2] - font.getbbox("O")[2])
    assert boxes["long"][0] > boxes["short"][0] > 0  # both dip below the baseline, the long one further
    assert boxes["inside"][0] <= 1  # FE: the tail ends on the baseline
    assert boxes["long"][1] > boxes["short"][1]


def test_zero_variants(variant_font):
    assert _holes(_ink(variant_font(_0="slit"), "0")) == 0  # FE slit: the ring is cut
    assert _holes(_ink(variant_font(_0="slashed"), "0")) == 2
    dotted = _ink(variant_font(_0="dotted"), "0")
    assert dotted[dotted.shape[0] // 2, dotted.shape[1] // 2]  # the dot sits in the centre
    rrect, oval = _ink(variant_font(_0="rrect"), "0"), _ink(variant_font(_0="oval"), "0")
    assert rrect.shape[1] < oval.shape[1]  # the rounded-rectangle zero is the narrow one
    # an ellipse fills pi/4 of its box; a rounded rectangle or stadium clearly more
    assert _fill(oval) < 0.81 < 0.84 < _fill(rrect)


def test_uk_draws_o_and_zero_alike_fe_does_not(built):
    from train.gen import identical_glyphs

    fonts, styles = built
    uk, fe = fonts["uk"], fonts["fe"]
    assert np.array_equal(_ink(uk, "O"), _ink(uk, "0"))
    assert np.array_equal(_ink(uk, "I"), _ink(uk, "1"))  # bare bars both
    assert _ink(uk, "1").shape[1] < 0.25 * _ink(uk, "1").shape[0]
    assert identical_glyphs(str(uk)).get("O") == "0"
    a, b = _same_size(_ink(fe, "O"), _ink(fe, "0"))
    assert np.abs(a - b).mean() > 0.05
    assert "O" not in identical_glyphs(str(fe))
    assert styles["fe"].variant("0") == "slit" and styles["fe"].variant("1") == "flag_foot"
    assert styles["uk"].variant("D") == "spurs" and styles["uk"].variant("4") == "closed"


def test_family_widths(built):
    fonts, _ = built
    brazil = ImageFont.truetype(str(fonts["mandatory"]), 100)
    # proportional Mandatory: I narrow, A and M wide [B2]
    assert brazil.getlength("I") < 0.45 * brazil.getlength("H")
    assert brazil.getlength("M") > 1.1 * brazil.getlength("H")
    assert brazil.getlength("A") > brazil.getlength("E")
    us = ImageFont.truetype(str(fonts["us"]), 100)
    assert len({round(us.getlength(c), 1) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}) == 1  # monospaced dies
    assert us.getlength("I") == us.getlength("H")  # the serif I sits in a full cell


def test_random_style_per_family_is_consistent():
    for family in FAMILIES:
        for seed in range(5):
            style = random_style(np.random.default_rng(seed), family)
            assert style == random_style(np.random.default_rng(seed), family)
            assert PlateFontStyle.from_dict(json.loads(json.dumps(style.to_dict()))) == style
            assert set(dict(style.variants)) == set(VARIANTS)
            assert all(v in VARIANTS[c] for c, v in style.variants)
            assert 0.09 <= style.stroke <= min(style.letter_width, style.digit_width) / 3.4 + 1e-6
    fr = [random_style(np.random.default_rng(s), "fr") for s in range(20)]
    assert all(s.variant("0") != "slit" and s.variant("4") == "closed" for s in fr)  # closed shapes [F3]
    anys = {random_style(np.random.default_rng(s), "any").variant("0") for s in range(60)}
    assert anys == set(VARIANTS["0"])
    with pytest.raises(ValueError):
        random_style(np.random.default_rng(0), "martian")


def test_builds_are_deterministic_and_cached(tmp_path):
    a = build_plate_fonts(tmp_path / "a", 2, seed=11)
    b = build_plate_fonts(tmp_path / "b", 2, seed=11)
    c = build_plate_fonts(tmp_path / "c", 2, seed=12)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    head = TTFont(a[0])["head"]  # fixed timestamps: a rebuild another day gives the same bytes too
    assert head.created == head.modified == _EPOCH
    assert any(p.read_bytes() != q.read_bytes() for p, q in zip(a, c, strict=True))
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert [e["family"] for e in manifest["fonts"]] == list(FAMILIES[:2])
    for i, e in enumerate(manifest["fonts"]):
        expected = random_style(np.random.default_rng([11, i]), e["family"])
        assert PlateFontStyle.from_dict(e["style"]) == expected
    stamps = [p.stat().st_mtime_ns for p in a]
    assert build_plate_fonts(tmp_path / "a", 2, seed=11) == a  # reused, not rewritten
    assert [p.stat().st_mtime_ns for p in a] == stamps
    a[1].write_bytes(b"broken")  # a damaged file is noticed and rebuilt
    again = build_plate_fonts(tmp_path / "a", 2, seed=11)
    assert again[1].read_bytes() == b[1].read_bytes()
    fewer = build_plate_fonts(tmp_path / "a", 1, seed=11, families=["us"])  # a new key rebuilds
    assert [p.name for p in fewer] == ["plate-00-us.ttf"]
    assert sorted(p.name for p in (tmp_path / "a").glob("*.ttf")) == ["plate-00-us.ttf"]  # old ones gone
    with pytest.raises(ValueError):
        build_plate_fonts(tmp_path / "d", 2, seed=1, families=["martian"])


def test_generator_renders_plates_with_a_built_font(built):
    from train.gen import _glyph, _text_mask, random_plate_spec, render_plate, spec_for_font

    fonts, _ = built
    rng = np.random.default_rng(4)
    for family in ("fe", "uk", "us"):
        path = str(fonts[family])
        for char in CHARSET:
            assert _glyph(char, path, 32).max() > 128, (family, char)
        spec = spec_for_font(random_plate_spec(rng, {"fe": "eu"}.get(family, family)), path)
        assert _text_mask(spec.text, path, 48).mean() > 10
        canvas, corners = render_plate(spec, path, 64, rng, difficulty=0.0)
        assert canvas.shape[0] >= 64 and np.isfinite(canvas).all() and corners.shape == (4, 2)
        assert np.percentile(canvas, 95) - np.percentile(canvas, 5) > 60  # dark text on the plate


def test_cli(tmp_path, capsys):
    out, sheet = tmp_path / "fonts", tmp_path / "sheet.png"
    assert main(["--out", str(out), "--count", "2", "--seed", "3", "--sheet", str(sheet)]) == 0
    assert len(list(out.glob("*.ttf"))) == 2 and (out / "manifest.json").is_file()
    assert Image.open(sheet).size[0] > 200
    capsys.readouterr()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["--out", str(blocker / "sub"), "--count", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
