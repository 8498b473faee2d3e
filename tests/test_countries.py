"""`detector.countries`: country formats as a reading prior (anprd.formats), in the detector's decoding
and in the tracker's fusion; and formats that never delete a plate."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from anprd.config import ConfigError, load_config
from anprd.config.detector import DetectorConfig
from anprd.ctc import ALPHABET, BLANK
from anprd.ctc_fusion import fuse_detections
from anprd.detector import Calibration, ModelError, PlateDetector
from anprd.formats import CountryPrior, FormatPrior, formats_right
from anprd.types import Box, Detection

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / DetectorConfig().model


def posteriors(text: str, sure: float = 0.999, second: dict[int, tuple[str, float]] | None = None
               ) -> np.ndarray:
    """CTC posteriors (32 x 37) that read `text`, one character every fourth column; `second` gives
    a position's runner-up character and its probability."""
    probs = np.full((32, len(ALPHABET) + 1), 1e-6, np.float32)
    probs[:, BLANK] = 1.0
    for i, char in enumerate(text):
        column = 2 + 4 * i
        probs[column, :] = 1e-6
        probs[column, ALPHABET.index(char)] = sure
        if second and i in second:
            other, p = second[i]
            probs[column, ALPHABET.index(other)] = p
    return probs / probs.sum(axis=1, keepdims=True)


def test_a_uk_format_turns_a_sure_i_into_the_1_it_demands():
    prior = CountryPrior(["uk"])
    fit = prior.choose([("LSI5EBC", 0.99)])
    assert fit is not None and (fit.text, fit.country) == ("LS15EBC", "gb")


def test_band_letters_are_dropped_only_where_a_band_can_show_them():
    fr = CountryPrior(["fr"])
    assert fr.choose([("FAB123CD", 0.9)]).text == "AB123CD"  # F under the EU stars
    assert fr.choose([("AB123CD75", 0.9)]).text == "AB123CD"  # the department on the right band
    br = CountryPrior(["br"])
    assert br.choose([("XABC1D23", 0.9)]) is None  # Mercosur plates have no side band


def test_a_format_never_changes_a_character_into_one_of_another_shape():
    prior = CountryPrior(["gb"])
    assert prior.fits("LSX5EBC") == []  # X looks like no digit, and LS is no band's print
    assert prior.choose([("LSX5EBC", 0.9), ("LS15EBC", 1e-5)]) is None  # too unlikely to take over


def test_a_reading_that_fits_as_read_is_kept():
    assert [f.text for f in CountryPrior(["br"]).fits("ABC1D23")] == ["ABC1D23"]


def test_a_common_format_outweighs_an_unsure_look_alike_but_not_a_sure_reading():
    prior = FormatPrior({"@@###@@": 38, "@@#####": 3})
    assert prior.variants("RK6O5AB") == ["RK605AB"]  # the O where the format has a digit
    assert prior.variants("RKXO5AB") == []  # X looks like no digit: no variant
    ranked = prior.rank(["RK6O5AB", "RK605AB"], [math.log(0.6), math.log(0.3)])
    assert ranked[0][0] == "RK605AB" and ranked[0][1] > 0.6
    assert sum(p for _, p in ranked) == pytest.approx(0.9)  # the reader's mass, shared out again
    # a plate of a format the labels lack, read surely, stays as read
    assert prior.rank(["1B80338", "IB80338"], [math.log(0.9), math.log(0.01)])[0][0] == "1B80338"


def test_the_leave_one_out_check_counts_each_plate_without_its_own_format():
    unsure = [math.log(0.5), math.log(0.45)]
    pairs = [("AB123CD", ["AB12JCD", "AB123CD"], unsure)] * 5  # a J/3 slip the format settles
    assert formats_right(pairs, {"@@###@@": 5}) == (0, 5)
    # a format seen once is unseen once its plate is left out: no help for that plate
    lonely = [("1B80338", ["IB80338", "1B80338"], unsure)]
    assert formats_right(lonely, {"#@#####": 1, "@@#####": 4}) == (0, 0)


@pytest.fixture(scope="module")
def detector() -> PlateDetector:
    return PlateDetector(MODEL, DetectorConfig(prefilter="none"))


def _decode(detector: PlateDetector, config: DetectorConfig, reads: np.ndarray):
    detector.config, detector.country_prior = config, CountryPrior(config.countries)
    detector.patterns = []
    try:
        return detector._decode(reads)
    finally:
        detector.config, detector.country_prior = DetectorConfig(prefilter="none"), CountryPrior([])


def test_the_detector_reads_a_uk_bar_one_with_countries_and_leaves_it_without(detector):
    reads = posteriors("LSI5EBC")[None]
    text, confidence, candidates, pattern, free = _decode(detector, DetectorConfig(), reads)
    assert (text, pattern) == ("LSI5EBC", None)  # no countries: nothing changes
    text, confidence, candidates, pattern, free = _decode(
        detector, DetectorConfig(countries=["uk"]), reads)
    assert (text, pattern) == ("LS15EBC", "gb")
    assert candidates[0].text == "LS15EBC" and "LSI5EBC" in {c.text for c in candidates}
    assert confidence > 0.5  # the reader was sure of the shapes; only the look-alike changed


def test_a_pattern_reading_never_deletes_the_plate(detector):
    # a pattern fit far less probable than the free reading used to replace its confidence, and
    # `min_confidence` then dropped a plate the reader was sure of
    reads = posteriors("LSI5EBC", second={2: ("1", 0.03)})[None]
    config = DetectorConfig(patterns={"uk": "@@##@@@"}, min_confidence=0.05)
    detector.patterns = []
    detector.config, detector.country_prior = config, CountryPrior([])
    from anprd.ctc import parse_pattern

    detector.patterns = [parse_pattern("uk", "@@##@@@")]
    calibration, detector.calibration = detector.calibration, Calibration()  # raw probabilities
    try:
        text, confidence, _, pattern, free = detector._decode(reads)
    finally:
        detector.patterns, detector.config = [], DetectorConfig(prefilter="none")
        detector.calibration = calibration
    assert (text, pattern) == ("LS15EBC", "uk")
    assert confidence < config.min_confidence < free  # the floor is applied to the free reading


def test_fusion_fits_the_tracks_reading_to_the_countries():
    frames = [Detection(Box(10, 10, 100, 22), 0.99, "LSI5EBC", 0.99, char_probs=posteriors("LSI5EBC"))
              for _ in range(4)]
    assert fuse_detections(frames).text == "LSI5EBC"
    from anprd.ctc_fusion import CandidateFusion

    fusion = CandidateFusion(prior=lambda: CountryPrior(["gb"]))
    for frame in frames:
        fusion.add(frame)
    reading = fusion.reading()
    assert (reading.text, reading.country) == ("LS15EBC", "gb")


def test_countries_in_the_config_are_checked(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("cameras: [{id: a, url: 0}]\ndetector: {countries: [uk, fr, uk]}\n")
    assert load_config(path).detector.countries == ["gb", "fr"]
    path.write_text("cameras: [{id: a, url: 0}]\ndetector: {countries: [xx]}\n")
    with pytest.raises(ConfigError, match=r"detector\.countries.*'xx' is not a country"):
        load_config(path)


def test_a_calibration_maps_probabilities_monotonically_and_is_checked(tmp_path):
    from anprd.detector import ModelError

    platt = Calibration(1.2, 1.5)
    values = [platt(p) for p in (0.01, 0.2, 0.5, 0.9, 0.999)]
    assert values == sorted(values) and all(0 < v < 1 for v in values)
    assert platt(0.5) == pytest.approx(1 / (1 + np.exp(-1.5)))
    assert Calibration()(0.37) == 0.37
    for record in ({"a": "x", "b": 0}, {"a": -1, "b": 0}, {"b": 1}):
        with pytest.raises(ModelError, match="calibration"):
            Calibration.from_meta(record, tmp_path / "model.json")


def _dark_plates(count: int) -> list[tuple[np.ndarray, tuple[float, float, float, float], str]]:
    """Black plates with light text (French collection plates) pasted on a mid-grey road."""
    from train.fonts import plate_fonts_by_family
    from train.plates import StyledSpec, render_styled_plate, style_by_key

    style = style_by_key("fr-collection")
    fonts = plate_fonts_by_family()["fr"]
    rng = np.random.default_rng(11)
    out = []
    for k in range(count):
        layout = style.formats[k % len(style.formats)]
        pools = {"@": style.letters, "#": "0123456789"}
        groups = tuple("".join(pools[c][rng.integers(len(pools[c]))] if c in pools else c for c in g)
                       for g in layout.groups)
        spec = StyledSpec(style.key, groups, layout.separators)
        canvas, _, _ = render_styled_plate(spec, str(fonts[k % len(fonts)]), 36, rng, difficulty=0.0)
        image = np.full((160, 320), 120.0, np.float32)
        y, x = 60, 40
        image[y: y + canvas.shape[0], x: x + canvas.shape[1]] = canvas
        out.append((image.astype(np.uint8), (x, y, x + canvas.shape[1], y + canvas.shape[0]), spec.text))
    return out


def test_light_text_on_a_dark_plate_is_read_inverted(detector):
    plates = _dark_plates(8)

    def read_right(config: DetectorConfig) -> int:
        detector.config = config
        try:
            return sum(any(d.text == text for d in detector.read([box], image))
                       for image, box, text in plates)
        finally:
            detector.config = DetectorConfig(prefilter="none")

    inverted = read_right(DetectorConfig(prefilter="none", verify_threshold=0.0))
    as_seen = read_right(DetectorConfig(prefilter="none", verify_threshold=0.0, read_inverted=False))
    assert inverted >= 6 and as_seen <= inverted - 3, (inverted, as_seen)
    # an inverted reading under the floor gives way to the reading as seen
    floored = read_right(DetectorConfig(prefilter="none", verify_threshold=0.0, inverted_min_confidence=1.0))
    assert floored == as_seen


def test_a_model_folder_carries_its_formats_and_the_detector_reads_with_them(detector, tmp_path):
    tuned = tmp_path / "tuned"
    shutil.copytree(MODEL, tuned)
    meta = json.loads((tuned / "model.json").read_text())
    meta["formats"] = {"counts": {"@@###@@": 38, "@@#####": 3}, "plates": 41, "source": "a test"}
    (tuned / "model.json").write_text(json.dumps(meta))
    reads = posteriors("RK6O5AB", sure=0.6, second={3: ("0", 0.35)})[None]
    with_formats = PlateDetector(tuned, DetectorConfig(model=str(tuned), prefilter="none"))
    assert with_formats.format_prior and with_formats._decode(reads)[0] == "RK605AB"
    assert detector._decode(reads)[0] == "RK6O5AB"  # the shipped model has none
    turned_off = PlateDetector(tuned, DetectorConfig(model=str(tuned), prefilter="none", model_formats=False))
    assert turned_off.format_prior is None and turned_off._decode(reads)[0] == "RK6O5AB"
    # the tracker's fusion ranks with them too
    from anprd.ctc_fusion import CandidateFusion
    from anprd.types import Candidate

    fusion = CandidateFusion(prior=lambda: with_formats.format_prior)
    for _ in range(3):
        fusion.add(Detection(Box(10, 10, 100, 22), 0.99, "RK6O5AB", 0.6, char_probs=reads[0],
                             candidates=(Candidate("RK6O5AB", 0.6), Candidate("RK605AB", 0.35))))
    assert fuse_detections(fusion.detections).text == "RK6O5AB"  # the frames alone
    assert fusion.reading().text == "RK605AB"
    meta["formats"] = {"counts": {"AB12": 3}}
    (tuned / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="'formats' must hold"):
        PlateDetector(tuned, DetectorConfig(model=str(tuned), prefilter="none"))
