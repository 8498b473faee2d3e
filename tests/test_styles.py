"""The plate style library (anprd/styles/*.yaml) and the plates `train.plates` renders from it."""

from __future__ import annotations

import re

import numpy as np
import pytest

from anprd.styles import Country, StyleError, country_code, load_countries, parse_format
from train.fonts import available_fonts
from train.gen import random_plate_and_font, random_plate_spec, render_plate_with_chars, spec_for_font
from train.plates import StyledSpec, all_styles, render_styled_plate, style_by_key

REQUIRED = {"gb", "fr", "de", "nl", "it", "es", "pl", "br", "us", "eu"}


def test_the_library_has_every_country_the_reader_is_trained_for():
    countries = load_countries()
    assert set(countries) >= REQUIRED
    keys = {s.key for s in all_styles()}
    # the styles the real-plate issue names: UK front and rear, France current, old and black, Brazil
    # grey and Mercosur, several US states
    assert {"gb-front", "gb-rear", "fr-siv", "fr-fni_front", "fr-collection", "br-grey", "br-mercosur",
            "us-california", "us-texas", "us-new_york"} <= keys


def test_format_repeats_expand_to_every_layout_within_the_length_limit():
    layouts = parse_format("@{1,3}~@{1,2} #{1,4}", max_length=8)
    lengths = sorted(len(f.classes) for f in layouts)
    # 3 x 2 x 4 = 24 layouts, less the one of 3 + 2 + 4 = 9 characters
    assert len(layouts) == 23 and max(lengths) == 8 and min(lengths) == 3
    assert {f.separators for f in layouts} == {("seals", " ")}
    fr = parse_format("@@-###-@@")
    assert [(f.groups, f.separators) for f in fr] == [(("@@", "###", "@@"), ("-", "-"))]


@pytest.mark.parametrize("spec", ["@@!##", "@{0}#", "@{3,2}"])
def test_a_bad_format_is_refused(spec):
    with pytest.raises(ValueError, match="format"):
        parse_format(spec)


def test_a_bad_style_file_is_named_with_its_key(tmp_path):
    (tmp_path / "xx.yaml").write_text("country: xx\nname: X\nstyles:\n  a:\n    size_mm: [520, 110]\n"
                                      "    plate: white\n    text: mauve\n    formats: ['@@ ##']\n")
    load_countries.cache_clear()
    with pytest.raises(StyleError, match=r"xx\.yaml: styles\.a\.text: 'mauve' is not a colour"):
        load_countries(tmp_path)
    (tmp_path / "xx.yaml").write_text("country: yy\nstyles: {a: {}}\n")
    with pytest.raises(StyleError, match="must match the file name"):
        load_countries(tmp_path)
    load_countries.cache_clear()


def test_country_codes_take_uk_for_gb_and_refuse_unknown_ones():
    assert country_code("uk") == "gb" and country_code("FR") == "fr"
    with pytest.raises(ValueError, match="'xx' is not a country"):
        country_code("xx")
    with pytest.raises(ValueError, match="'eu' is not a country"):  # generic: no formats to decode with
        country_code("eu")


def test_band_marks_follow_the_bands_a_style_draws():
    styles = {s.key: s for s in all_styles()}
    left, right = styles["fr-siv"].band_marks
    assert left == "F" and re.fullmatch(right, "974") and re.fullmatch(right, "2A")
    assert not re.fullmatch(right, "9745")
    assert styles["br-mercosur"].band_marks == ("", "")
    assert re.fullmatch(styles["gb-front"].band_marks[0], "ENG")  # under a flag


def _render(key: str, seed: int, height: int = 60):
    style = style_by_key(key)
    rng = np.random.default_rng(seed)
    layout = style.formats[0]
    pools = {"@": style.letters, "#": "0123456789"}
    groups = tuple("".join(pools[c][rng.integers(len(pools[c]))] if c in pools else c for c in g)
                   for g in layout.groups)
    font = str(available_fonts()[0])
    spec = spec_for_font(StyledSpec(key, groups, layout.separators), font)
    return spec, render_styled_plate(spec, font, height, rng, difficulty=0.0)


@pytest.mark.parametrize("key", [s.key for s in all_styles()])
def test_every_style_renders_one_centre_per_character_inside_the_plate(key):
    spec, (canvas, corners, centres) = _render(key, 3)
    assert len(centres) == len(spec.text)  # band and strip print is never part of the label
    x0, y0 = corners.min(axis=0)
    x1, y1 = corners.max(axis=0)
    assert (centres[:, 0] > x0).all() and (centres[:, 0] < x1).all()
    assert (np.diff(centres[:, 0]) > 0).all()  # reading order
    assert canvas.shape == (int(y1 - y0), int(x1 - x0))
    assert canvas.std() > 10  # something is drawn on the plate


@pytest.mark.parametrize("key, light_text", [("fr-collection", True), ("nl-old_blue", True),
                                             ("fr-siv", False), ("gb-rear", False)])
def test_polarity_follows_the_style(key, light_text):
    for seed in range(3):
        style = style_by_key(key)
        spec, (canvas, _, centres) = _render(key, seed, height=80)
        row = canvas[int(centres[0, 1])]
        ground = float(np.median(canvas[2: canvas.shape[0] // 10, canvas.shape[1] // 2]))
        ink = float(row.max() if light_text else row.min())
        assert (ink > ground + 40) if light_text else (ink < ground - 40), (key, seed, ink, ground)
        assert style is not None


def test_unstyled_draws_keep_the_generic_plates_of_before():
    fonts = available_fonts()
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    spec, font = random_plate_and_font(a, fonts, styled=0.0)
    legacy = random_plate_spec(b)
    legacy_font = str(fonts[b.integers(len(fonts))])
    assert (spec, font) == (spec_for_font(legacy, legacy_font), legacy_font)
    assert a.random() == b.random()  # no extra number drawn: sets made before styles are unchanged


def test_styled_draws_cover_every_country():
    fonts = available_fonts()
    rng = np.random.default_rng(4)
    seen = {random_plate_and_font(rng, fonts, styled=1.0)[0].family.split("-")[0] for _ in range(400)}
    assert seen == set(load_countries())


def test_a_styled_plate_goes_through_the_generator_with_its_holder():
    fonts = available_fonts()
    rng = np.random.default_rng(5)
    spec, font = random_plate_and_font(rng, fonts, styled=1.0)
    canvas, corners, centres = render_plate_with_chars(spec, font, 40, rng)
    assert len(centres) == len(spec.text) and canvas.shape[0] >= 40


def test_country_patterns_come_from_the_same_formats_as_the_plates():
    fr: Country = load_countries()["fr"]
    sets = {tuple(sorted(s)[0] for s in p) for p, _, _ in fr.patterns()}
    assert ("A", "A", "0", "0", "0", "A", "A") in sets  # AA-123-AA
    assert all("I" not in s and "O" not in s for p, _, _ in fr.patterns() for s in p)  # never issued
