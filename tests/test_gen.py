"""The synthetic generator: the seed's presence rule holds on every generated label."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from train.fonts import available_fonts
from train.gen import (
    NEGATIVE_KINDS,
    Backgrounds,
    PlateSpec,
    _glyph,
    builtin_background_dirs,
    identical_glyphs,
    presence_label,
    random_plate_spec,
    render_plate,
    sample_read_crop,
    sample_scene,
    sample_window,
    spec_for_font,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fonts() -> list[Path]:
    return available_fonts()


@pytest.fixture(scope="module")
def backgrounds() -> Backgrounds:
    return Backgrounds(builtin_background_dirs(), np.random.default_rng(0))


@pytest.mark.parametrize(("box", "expected"), [
    ((10, 10, 100, 40), True),           # 70% wide, inside
    ((-1, 10, 90, 40), False),           # crosses the left edge
    ((10, 10, 120, 40), False),          # 86% wide: too big
    ((10, 4, 60, 62), False),            # 90.6% tall: too big
    ((10, 10, 80, 40), False),           # 55% wide and 47% tall: too small
    ((10, 10, 50, 50), True),            # 31% wide but 62.5% tall: big enough
    ((0, 0, 102.3, 55.9), True),         # just under both limits, touching the corner
])
def test_presence_rule_cases(box, expected):
    assert presence_label(box) is expected


def test_generated_labels_follow_the_presence_rule(fonts, backgrounds):
    rng = np.random.default_rng(11)
    kinds = set()
    for _ in range(300):
        s = sample_window(rng, backgrounds, fonts, difficulty=1.0)
        kinds.add(s.kind)
        assert s.image.shape == (64, 128) and s.image.dtype == np.uint8
        if s.kind == "absent":
            assert not s.present and s.text == ""
            continue
        assert s.present == presence_label(s.box), (s.kind, s.box)
        assert s.present == (s.kind == "positive")
        if s.present:
            assert 1 <= len(s.text) <= 10 and s.text.isalnum() and s.text.isupper() or s.text.isdigit()
        else:
            assert s.text == ""
    assert kinds == {"positive", *NEGATIVE_KINDS}


def test_positive_boxes_are_where_the_rendered_plate_is(fonts, monkeypatch):
    """The label box must be where the plate is: where a window differs from the same window rendered
    with its plate painted out (black), the box's edges are, within the warp's and blur's pixel."""
    import train.gen

    render = train.gen.render_plate_with_chars
    paint_out = False

    def plate_painted_out(*args, **kwargs):
        canvas, corners, centres = render(*args, **kwargs)
        if paint_out:
            (x0, y0), (x1, y1) = corners[0].astype(int), corners[2].astype(int)
            canvas = canvas.copy()
            canvas[y0:y1, x0:x1] = 0
        return canvas, corners, centres

    def window(seed: int):  # the same random numbers each time: one window, with or without its plate
        return sample_window(np.random.default_rng(seed),
                             Backgrounds(builtin_background_dirs(), np.random.default_rng(seed)),
                             fonts, difficulty=0.0, positive_fraction=1.0)

    monkeypatch.setattr(train.gen, "render_plate_with_chars", plate_painted_out)
    checked = 0
    for seed in range(60):
        paint_out = False
        s = window(seed)
        if not s.present:
            continue
        paint_out = True
        without = window(seed)
        assert without.box == s.box and without.text == s.text
        rows, cols = np.nonzero(np.abs(s.image.astype(int) - without.image.astype(int)) > 25)
        x0, y0, x1, y1 = s.box
        found = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        assert np.allclose(found, (x0, y0, x1, y1), atol=2), (seed, s.box, found)
        assert s.image[int(y0):int(y1), int(x0):int(x1)].std() > 5  # text: contrast inside the box
        checked += 1
    assert checked >= 20


def test_plate_families_and_lengths(fonts):
    rng = np.random.default_rng(5)
    lengths = {len(random_plate_spec(rng).text) for _ in range(2000)}
    assert min(lengths) <= 3 and max(lengths) >= 9  # 1-10 characters, not a fixed 7
    for family in ("uk", "eu", "us"):
        spec = random_plate_spec(rng, family)
        canvas, corners = render_plate(spec, str(fonts[0]), 40, rng)
        assert canvas.ndim == 2 and canvas.shape[0] >= 40
        plate_w = corners[1, 0] - corners[0, 0]
        assert plate_w / 40 == pytest.approx(2.0 if family == "us" else 4.7, rel=0.1)


def test_backgrounds_never_show_a_boxed_plate(tmp_path):
    """A folder's boxes.tsv marks real plates; crops must avoid them."""
    image = np.full((400, 600), 40, np.uint8)
    image[150:250, 200:400] = 255  # the "plate"
    cv2.imwrite(str(tmp_path / "street.png"), image)
    (tmp_path / "boxes.tsv").write_text("# file\tx\ty\tw\th\nstreet.png\t200\t150\t200\t100\n")
    bgs = Backgrounds([tmp_path], np.random.default_rng(0), procedural_fraction=0.0)
    for _ in range(200):
        crop = bgs.crop(128, 64)
        assert crop.max() < 200


@pytest.mark.parametrize(("balanced", "low", "high"), [(False, 0.02, 0.2), (True, 0.35, 0.65)])
def test_balanced_backgrounds_draw_each_folder_equally_often(tmp_path, balanced, low, high):
    """One photo in one folder, 19 in another: drawn by file the lone photo is ~5% of the loads,
    balanced by folder ~50%."""
    lone, many = tmp_path / "lone", tmp_path / "many"
    lone.mkdir()
    many.mkdir()
    cv2.imwrite(str(lone / "white.png"), np.full((80, 160), 250, np.uint8))
    for i in range(19):
        cv2.imwrite(str(many / f"dark{i}.png"), np.full((80, 160), 10, np.uint8))
    bgs = Backgrounds([lone, many], np.random.default_rng(1), procedural_fraction=0.0, balanced=balanced)
    loads = [bgs._load()[0].mean() > 128 for _ in range(400)]
    assert low < np.mean(loads) < high


def test_scene_labels_match_plates(fonts, backgrounds):
    rng = np.random.default_rng(9)
    image, plates = sample_scene(rng, backgrounds, fonts, size=(640, 360))
    assert image.shape == (360, 640, 3) and plates
    for (x, y, w, h), text in plates:
        assert x >= 0 and y >= 0 and x + w <= 640 and y + h <= 360
        assert image[y:y + h, x:x + w].std() > 5 and text.isalnum()


def test_cli_writes_windows_and_labels(tmp_path):
    out = tmp_path / "look"
    result = subprocess.run([sys.executable, "-m", "train.gen", "--count", "12", "--out", str(out),
                             "--seed", "4"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with open(out / "labels.tsv") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))[1:]
    assert len(rows) == 12
    for name, present, _text, kind, *box in rows:
        assert cv2.imread(str(out / name), cv2.IMREAD_GRAYSCALE).shape == (64, 128)
        assert (present == "1") == presence_label(tuple(map(float, box))) or kind == "absent"


def test_cli_rejects_a_missing_background_folder(tmp_path):
    result = subprocess.run([sys.executable, "-m", "train.gen", "--count", "1", "--out", str(tmp_path),
                             "--backgrounds", str(tmp_path / "nope")], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "nope" in result.stderr and "Traceback" not in result.stderr


def test_cli_names_an_output_folder_it_cannot_make(tmp_path):
    taken = tmp_path / "a-file"
    taken.write_text("not a folder")
    result = subprocess.run([sys.executable, "-m", "train.gen", "--count", "1", "--out", str(taken)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("train.gen:")] == [
        f"train.gen: cannot write to {taken}: File exists"]


def test_character_centres_lie_inside_the_plate_in_reading_order(fonts, backgrounds):
    rng = np.random.default_rng(21)
    seen = 0
    while seen < 30:
        s = sample_window(rng, backgrounds, fonts, difficulty=0.5, positive_fraction=1.0)
        if not s.present:
            continue
        seen += 1
        x0, _, x1, _ = s.box
        assert len(s.char_x) == len(s.text)
        assert all(x0 - 1 <= x <= x1 + 1 for x in s.char_x)
        assert list(s.char_x) == sorted(s.char_x) or abs(s.char_x[0] - s.char_x[-1]) < 2


def test_centred_positives_frame_the_plate_like_the_reader_crop(fonts, backgrounds):
    rng = np.random.default_rng(8)
    centred = [s for s in (sample_window(rng, backgrounds, fonts, positive_fraction=1.0, centred_fraction=1.0)
                           for _ in range(60)) if s.present]
    assert len(centred) > 40 and all(s.centred for s in centred)
    for s in centred:
        x0, y0, x1, y1 = s.box
        assert abs((x0 + x1) / 2 - 64) <= 5 and abs((y0 + y1) / 2 - 32) <= 4


def test_a_letter_drawn_exactly_as_a_digit_is_labelled_as_the_digit(fonts):
    by_name = {f.name: str(f) for f in fonts}
    # OSP-DIN and Bebas Neue share one glyph for O and 0; DejaVu Sans Mono slashes its zero
    assert identical_glyphs(by_name["OSP-DIN.ttf"]) == {"O": "0"}
    assert identical_glyphs(by_name["BebasNeue-Bold.otf"]) == {"O": "0"}
    assert identical_glyphs(by_name["DejaVuSansMono-Bold.ttf"]) == {}
    spec = PlateSpec("eu", ("BO", "1O0"), (" ",))
    assert spec_for_font(spec, by_name["OSP-DIN.ttf"]).text == "B0100"
    assert spec_for_font(spec, by_name["DejaVuSansMono-Bold.ttf"]) == spec


def test_reader_crops_hold_the_plate_text_in_reading_order(fonts, backgrounds):
    rng = np.random.default_rng(31)
    for _ in range(30):
        s = sample_read_crop(rng, backgrounds, fonts, difficulty=0.5)
        assert s.image.shape == (32, 128) and s.image.dtype == np.uint8
        assert 1 <= len(s.text) == len(s.char_x)
        # the box errors are a few percent, and the crop's margins are wider than that
        assert all(-2 <= x <= 130 for x in s.char_x), s.char_x
        assert list(s.char_x) == sorted(s.char_x) or abs(s.char_x[0] - s.char_x[-1]) < 2
        # a plate spans most of the crop: its first and last characters are far apart
        if len(s.text) >= 4:
            assert s.char_x[-1] - s.char_x[0] > 40


def test_eu_plates_get_a_crest_instead_of_the_band_only_when_asked(fonts):
    from train.gen import render_plate_with_chars

    spec = PlateSpec("eu", ("RK", "248AH"), (" ",))

    def left_edge_brightness(crest_fraction: float, seed: int) -> float:
        canvas, corners, _ = render_plate_with_chars(spec, str(fonts[0]), 60, np.random.default_rng(seed),
                                                     0.0, False, crest_fraction)
        (x0, y0), (x1, y1) = corners[0].astype(int), corners[2].astype(int)
        plate = canvas[y0:y1, x0:x1]
        strip = plate[int(0.3 * plate.shape[0]): int(0.5 * plate.shape[0]), : int(0.04 * plate.shape[1])]
        return float(strip.mean() / plate.mean())

    # the blue band is dark against the plate; a crest leaves the plate's own colour around it
    assert all(left_edge_brightness(0.0, seed) < 0.6 for seed in range(5))
    assert all(left_edge_brightness(1.0, seed) > 0.8 for seed in range(5))


def test_eu_emblems_include_two_stacked_stickers_and_us_emblems_do_not(fonts):
    from train.gen import _text_mask_and_centres, _text_strip

    font = str(fonts[0])

    def gap_blobs(family: str, seed: int) -> list[tuple[int, int]]:
        """(top, bottom) of each blob the emblem gap between the two groups holds."""
        spec = PlateSpec(family, ("RK", "340"), ("emblem",))
        strip, _ = _text_strip(spec, font, 48, np.random.default_rng(seed))
        first = _text_mask_and_centres("RK", font, 48)[0].shape[1]
        gap = strip[:, first: first + int(strip.shape[0] * 0.75)]
        count, _, stats, _ = cv2.connectedComponentsWithStats((gap > 0).astype(np.uint8))
        return [(int(s[cv2.CC_STAT_TOP]), int(s[cv2.CC_STAT_TOP] + s[cv2.CC_STAT_HEIGHT])) for s in stats[1:]]

    eu = [gap_blobs("eu", seed) for seed in range(20)]
    stacked = [b for b in eu if len(b) == 2]
    # two discs, one wholly above the other; the rest are the single crest-like blob
    assert 5 <= len(stacked) <= 19 and all(len(b) in (1, 2) for b in eu)
    assert all(min(b)[1] <= max(b)[0] for b in stacked)
    assert all(len(gap_blobs("us", seed)) == 1 for seed in range(20))


def test_format_letters_draw_i_o_and_q_at_half_the_rate_of_other_letters() -> None:
    from train.gen import _fill

    rng = np.random.default_rng(5)
    letters = _fill(rng, "L" * 60000)
    rate = {c: letters.count(c) / len(letters) for c in "ABIOQZ"}
    common = 1 / (23 + 3 * 0.5)
    assert all(abs(rate[c] - common) < 0.15 * common for c in "ABZ"), rate
    assert all(abs(rate[c] - common / 2) < 0.2 * common / 2 for c in "IOQ"), rate
    anything = _fill(rng, "X" * 36000)  # vanity texts keep every symbol equally likely
    assert abs(anything.count("O") / len(anything) - 1 / 36) < 0.2 / 36


def test_every_glyph_keeps_all_its_ink_inside_the_text_band(fonts):
    """Q's tail and J's hook reach below the baseline in most fonts. Cropped at the cap band, a Q was
    drawn as an O and a J as an I while labelled Q and J; squeezed into the band, no ink is lost."""
    from PIL import Image, ImageDraw, ImageFont

    for font_path in fonts:
        font = ImageFont.truetype(str(font_path), 64)
        _, cap_top, _, cap_bottom = font.getbbox("0AHM")
        band = cap_bottom - cap_top + 2
        for char in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ":
            whole = Image.new("L", (200, 200), 0)
            ImageDraw.Draw(whole).text((60, 60), char, font=font, fill=255)
            ink = np.asarray(whole, np.float64)
            rows = np.nonzero(ink.sum(axis=1))[0]
            height = max(rows[-1] - rows[0] + 1 + 2, band)  # the glyph's own height, or the band
            mask = _glyph(char, str(font_path), 64).astype(np.float64)
            assert mask.shape[0] == band
            # a vertical squeeze to the band scales the ink by band / height; a crop loses more
            kept = mask.sum() / (ink.sum() * band / height)
            assert kept > 0.98, f"{font_path.name} {char}: {kept:.3f} of its ink drawn"


def test_an_occlusion_bar_paints_the_columns_it_reports():
    from train.gen import occlusion_bar

    rng = np.random.default_rng(5)
    canvas = np.full((40, 200), 200.0, np.float32)
    assert occlusion_bar(canvas.copy(), rng, difficulty=0.0) is None  # never at difficulty 0
    painted = canvas.copy()
    x0, x1 = occlusion_bar(painted, rng, difficulty=1 / 0.06)  # drawn with certainty
    assert 0 <= x0 < x1 <= 200 and 2 <= x1 - x0 <= 12  # 2-6% of the width
    assert np.all(painted[:, x0:x1] == painted[0, x0]) and painted[0, x0] <= 120
    outside = np.ones(200, bool)
    outside[x0:x1] = False
    assert np.all(painted[:, outside] == 200)


def test_occluded_plates_regenerates_a_scene_set_and_names_the_characters_under_bars(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    from occluded_plates import characters_under, main, occluded_plates

    centres = np.array([[10, 5], [20, 5], [30, 5], [40, 5]], np.float32)
    assert characters_under("AB12", centres, (18, 22)) == "B"
    assert characters_under("AB12", centres, (23, 27)) == ""  # between two characters
    assert characters_under("AB12", centres, (16, 28)) == "B1"

    out = tmp_path / "scenes"
    made = subprocess.run([sys.executable, "-m", "train.gen", "--scenes", "--count", "40", "--out", str(out),
                           "--seed", "525252"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    labels, barred = occluded_plates(525252, 40)
    with open(out / "labels.tsv") as fh:
        written = [(row[0], row[5]) for row in list(csv.reader(fh, delimiter="\t"))[1:]]
    assert labels == written  # watching the bars does not change what is drawn
    assert barred and {(name, text) for name, text, _ in barred} <= set(labels)
    assert all(set(under) <= set(text) for _, text, under in barred)
    assert main(["--seed", "525252", "--count", "40", "--set", str(out)]) == 0
    assert main(["--seed", "1", "--count", "40", "--set", str(out)]) == 1
