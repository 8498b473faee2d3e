"""`anprd eval` scoring on a tiny hand-made set, where the errors are (misses, misread kinds,
confusions, calibration) by hand-computed cases, and `anprd eval DIR` end to end."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from anprd.ctc import edit_distance
from anprd.evaluate import (
    EvalError,
    calibration_bins,
    confusion_pairs,
    evaluate,
    expected_calibration_error,
    misread_kind,
    read_labels,
    score_image,
    substitutions,
)
from anprd.types import Box, Detection

REPO = Path(__file__).resolve().parent.parent
OLD_KEYS = {"images", "plates", "detected", "read_exact", "read_rate", "detection_recall", "char_accuracy",
            "false_positives", "ms_per_image"}
NEW_KEYS = {"missed", "low_iou", "misread_kinds", "confusions", "calibration_error"}


def _det(x, y, w, h, text) -> Detection:
    return Detection(box=Box(x, y, w, h), presence=1.0, text=text, confidence=0.9)


def test_score_image_counts_detected_read_and_false_positives():
    truth = [(Box(10, 10, 100, 25), "AB12CDE"), (Box(300, 200, 80, 40), "7XYZ123")]
    predicted = [_det(12, 11, 98, 24, "AB-12 CDE"),   # matched, read (hyphen/space ignored)
                 _det(310, 205, 75, 38, "7XY2123"),    # matched, one wrong character
                 _det(500, 10, 50, 20, "JUNK")]        # matches nothing
    s = score_image(truth, predicted)
    assert (s.plates, s.detected, s.read_exact, s.false_positives) == (2, 2, 1, 1)
    assert (s.char_errors, s.char_total) == (1, 14)


def test_low_overlap_is_not_a_detection():
    truth = [(Box(0, 0, 100, 20), "ABC123")]
    s = score_image(truth, [_det(70, 0, 100, 20, "ABC123")])  # IoU 30/170 = 0.18
    assert (s.detected, s.read_exact, s.false_positives, s.char_errors) == (0, 0, 1, 6)


def test_edit_distance():
    assert edit_distance("RK865AC", "BRK65ACC") == 3
    assert edit_distance("", "ABC") == 3


def test_evaluate_aggregates_over_images(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        cv2.imwrite(str(tmp_path / name), np.zeros((100, 200, 3), np.uint8))
    (tmp_path / "labels.tsv").write_text(
        "# file\tx\ty\tw\th\tPLATE\n"
        "a.jpg\t10\t10\t80\t20\tAB123\n"
        "b.jpg\t10\t10\t80\t20\tCD456\n"
        "b.jpg\t100\t60\t80\t20\tEF789\n"
        "c.jpg\t\t\t\t\t\n")
    responses = iter([  # labels order: a, b, c
        [_det(10, 10, 80, 20, "AB123")],
        [_det(12, 10, 80, 20, "CD456"), _det(100, 60, 80, 20, "EF780")],
        [_det(0, 0, 30, 10, "ZZZ")],
    ])
    report = evaluate(tmp_path, lambda image: next(responses))
    result = report.as_json()
    assert set(result) == OLD_KEYS | NEW_KEYS
    assert result["images"] == 3 and result["plates"] == 3 and result["detected"] == 3
    assert result["read_exact"] == 2 and result["read_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["false_positives"] == 1
    assert result["char_accuracy"] == pytest.approx(1 - 1 / 15, abs=1e-4)
    assert (result["missed"], result["low_iou"]) == (0, 0)
    assert result["misread_kinds"] == {"length": 0, "one_i": 0, "o_zero_d": 0, "other": 1}  # EF789 -> EF780
    assert result["confusions"] == [["9", "0", 1]]
    assert result["calibration_error"] == pytest.approx(0.9 - 2 / 3, abs=1e-4)  # one bin: 0.9 said, 2/3 right
    assert json.loads(json.dumps(result)) == result
    text = report.breakdown()
    assert re.search(r"^missed\s+0 \(0 with a box off the plate", text, re.M)
    assert re.search(r"^misread kinds\s+length 0, 1/I 0, O/0/D/Q 0, other 1$", text, re.M)
    assert re.search(r"^top confusions\s+9->0 1$", text, re.M)
    assert re.search(r"^calibration error\s+0\.233 ", text, re.M)
    assert re.search(r"^\s+0\.9-1\.0\s+3\s+66\.7%\s+0\.900$", text, re.M)  # the one reliability row
    assert report.table().splitlines()[0].index("3") == text.splitlines()[0].index("0")  # same columns


def test_nothing_detected_has_no_calibration_error(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((100, 200, 3), np.uint8))
    (tmp_path / "labels.tsv").write_text("a.jpg\t10\t10\t80\t20\tAB123\n")
    report = evaluate(tmp_path, lambda image: [])
    result = report.as_json()
    assert (result["missed"], result["detected"], result["calibration_error"]) == (1, 0, None)
    assert result["misread_kinds"] == {"length": 0, "one_i": 0, "o_zero_d": 0, "other": 0}
    assert result["confusions"] == []
    assert "nothing detected" in report.breakdown() and "reliability" not in report.breakdown()


def test_missed_plates_and_boxes_that_landed_off_them():
    truth = [(Box(0, 0, 100, 20), "AB123"),      # a box on a strip above: IoU 400/3600 = 0.11
             (Box(300, 0, 100, 20), "CD456"),    # a box grazing its edge: IoU 80/3920 = 0.02
             (Box(0, 200, 100, 20), "EF789"),    # nothing near it
             (Box(300, 200, 100, 20), "GH012")]  # found and read
    predicted = [_det(0, -16, 100, 20, "AB123"), _det(396, 0, 100, 20, "CD456"),
                 _det(300, 200, 100, 20, "GH012")]
    s = score_image(truth, predicted)
    assert (s.plates, s.detected, s.missed, s.low_iou, s.false_positives) == (4, 1, 3, 1, 2)
    assert s.reads == [("GH012", "GH012", 0.9)]


def test_a_box_matched_to_its_own_plate_is_not_off_a_neighbour():
    truth = [(Box(0, 0, 100, 20), "AB123"), (Box(0, -14, 100, 20), "CD456")]  # overlapping labels
    own = _det(0, 0, 100, 20, "AB123")  # IoU 1 with AB123, 600/3400 = 0.18 with CD456
    s = score_image(truth, [own])
    assert (s.detected, s.missed, s.low_iou) == (1, 1, 0)
    stray = _det(0, -30, 100, 20, "CD456")  # IoU 400/3600 = 0.11 with CD456, 0 with AB123
    s = score_image(truth, [own, stray])
    assert (s.detected, s.missed, s.low_iou, s.false_positives) == (1, 1, 1, 1)



def test_a_box_overlapping_a_missed_plate_by_iou_match_or_more_is_not_low_iou():
    # Hungarian assignment maximises the summed IoU: i-p 8/192 + j-q 45/155 = 0.33 beats i-q 47/153
    # = 0.31, so both plates are missed though q overlaps i by more than IOU_MATCH; i has no box in
    # [0.05, 0.3) (p 0.04, q 0.31), j has q (0.29)
    truth = [(Box(0, 0, 100, 20), "AB123"), (Box(108, 0, 100, 20), "CD456")]
    s = score_image(truth, [_det(-92, 0, 100, 20, "AB123"), _det(53, 0, 100, 20, "AB123")])
    assert (s.detected, s.missed, s.low_iou) == (0, 2, 1)

@pytest.mark.parametrize(("truth", "read", "kind"), [
    ("AB12CDE", "AB12CD", "length"),
    ("AB12CDE", "AB12CDEE", "length"),
    ("AB12CDE", "", "length"),
    ("I7963D", "17963D", "one_i"),
    ("1I1", "I1I", "one_i"),
    ("OMG9B", "0MG9B", "o_zero_d"),
    ("Q50DDF", "O5ODDF", "o_zero_d"),   # Q->O and 0->O
    ("WA957DD", "WA95700", "o_zero_d"),
    ("I0", "1O", "other"),              # 1/I and O/0 mixed in one read
    ("1A", "IB", "other"),              # a 1/I swap and something else
    ("AB12CDE", "AB12CDF", "other"),
    ("8B", "B8", "other"),
    ("OI", "IO", "other"),              # O<->I is neither family
])
def test_misread_kind(truth, read, kind):
    assert misread_kind(truth, read) == kind


def test_a_plate_read_right_has_no_misread_kind():
    with pytest.raises(ValueError, match="not a misread"):
        misread_kind("AB123", "AB123")


@pytest.mark.parametrize(("truth", "read", "found"), [
    ("WA957DD", "WA95700", [("D", "0"), ("D", "0")]),  # same length: position by position
    ("ABCD", "BCDA", [("A", "B"), ("B", "C"), ("C", "D"), ("D", "A")]),  # even where a shift is cheaper
    ("AB12CDE", "AB12CD", []),                          # a dropped character is no substitution
    ("CJ277PD", "CJ2T7P", [("7", "T")]),                # 7->T and D dropped: 2 edits, the only way
    ("RK865AC", "BRK65ACC", []),                        # B inserted, 8 dropped, C inserted
    # 2 edits either as (G inserted, 1->I) or (1->G, I inserted): the backtrace from the end takes
    # the substitution at the first tie it meets, at 1/I
    ("MG115DR", "MGG1I5DR", [("1", "I")]),
    ("AB", "", []),
])
def test_substitutions(truth, read, found):
    assert substitutions(truth, read) == found


def test_confusion_pairs_most_frequent_first_then_by_characters():
    pairs = [("WA957DD", "WA95700"), ("I7963D", "17963D"), ("OMG9B", "0MG9B"), ("AB12CDE", "AB12CD"),
             ("CJ277PD", "CJ2T7P"), ("ZJOW2Y", "ZJ0W2Y"), ("AB123", "AB123")]
    assert confusion_pairs(pairs) == [("D", "0", 2), ("O", "0", 2), ("7", "T", 1), ("I", "1", 1)]
    assert confusion_pairs(pairs, top=3) == [("D", "0", 2), ("O", "0", 2), ("7", "T", 1)]
    assert confusion_pairs([]) == []


def test_confusion_pairs_keep_the_top_ten():
    found = confusion_pairs([("ABCDEFGHJKLM", "BCDEFGHJKLMN")])  # 12 different pairs, once each
    assert len(found) == 10 and found[0] == ("A", "B", 1) and found[-1] == ("K", "L", 1)


def test_expected_calibration_error_by_hand():
    # bins 0.1-0.2: 0.15 said, 0 right; 0.5-0.6: 0.55 said, 1 right; 0.9-1.0: 0.95 said, 1 of 2 right
    # ECE = 1/4 * 0.15 + 1/4 * 0.45 + 2/4 * 0.45 = 0.375
    confidences, correct = [0.95, 0.95, 0.15, 0.55], [True, False, False, True]
    assert expected_calibration_error(confidences, correct) == pytest.approx(0.375)
    table = calibration_bins(confidences, correct)
    assert [(b.low, b.high, b.count) for b in table] == [(0.1, 0.2, 1), (0.5, 0.6, 1), (0.9, 1.0, 2)]
    assert [b.mean_confidence for b in table] == pytest.approx([0.15, 0.55, 0.95])
    assert [b.accuracy for b in table] == [0.0, 1.0, 0.5]
    # two bins: [0, 0.5) holds 0.2 and 0.4 (mean 0.3, half right), [0.5, 1] holds 0.9 (right)
    assert expected_calibration_error([0.2, 0.4, 0.9], [True, False, True], bins=2) == pytest.approx(
        2 / 3 * 0.2 + 1 / 3 * 0.1)


@pytest.mark.parametrize(("confidences", "correct", "ece"), [
    ([0.8] * 5, [True, True, True, True, False], 0.0),   # says 80%, reads 80% right
    ([1.0] * 4, [True, False, False, False], 0.75),      # certain, right once in four
    ([0.0, 1.0], [False, True], 0.0),                    # 0 in the first bin, 1 in the last
    ([1.2, -0.1], [True, False], 0.0),                   # clipped to [0, 1]
])
def test_expected_calibration_error_cases(confidences, correct, ece):
    assert expected_calibration_error(confidences, correct) == pytest.approx(ece, abs=1e-12)


def test_expected_calibration_error_of_nothing_is_none():
    assert expected_calibration_error([], []) is None


@pytest.mark.parametrize(("confidences", "correct", "bins", "message"), [
    ([0.5], [True, False], 10, "1 confidences but 2 outcomes"),
    ([math.nan], [True], 10, "NaN"),
    ([0.5], [True], 0, "bins must be at least 1"),
])
def test_calibration_refuses_bad_input(confidences, correct, bins, message):
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(confidences, correct, bins)


@pytest.mark.parametrize(("content", "message"), [
    ("a.jpg\t1\t2\t3\n", "labels.tsv:1: expected 6"),
    ("a.jpg\tx\t2\t3\t4\tAB1\n", "labels.tsv:1: box must be numbers"),
    ("missing.jpg\t1\t2\t3\t4\tAB1\n", "image not found"),
    ("a.jpg\t1\t2\t0\t4\tAB1\n", "need a positive box"),
    ("# only a comment\n", "no labelled images"),
])
def test_bad_labels_name_the_file_and_line(tmp_path, content, message):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "labels.tsv").write_text(content)
    with pytest.raises(EvalError, match=message):
        read_labels(tmp_path)


def test_missing_labels_file(tmp_path):
    with pytest.raises(EvalError, match="labels.tsv: missing"):
        read_labels(tmp_path)


# -- `anprd eval DIR` end to end, on the synthetic scenes tests/test_cli.py also evaluates ---------------
@pytest.fixture(scope="module")
def scene_set(tmp_path_factory) -> Path:
    """Four scenes written by the generator's CLI, with the first label's last character changed (a
    misread where the reader reads that plate) and a 30x10 label where no plate is (a miss)."""
    out = tmp_path_factory.mktemp("scenes")
    made = subprocess.run([sys.executable, "-m", "train.gen", "--scenes", "--count", "4", "--out", str(out),
                           "--seed", "77", "--difficulty", "0.3"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stderr
    labels = out / "labels.tsv"
    lines = labels.read_text().splitlines()
    rows = [line.split("\t") for line in lines if line and not line.startswith("#")]
    first = rows[0]
    first[5] = first[5][:-1] + ("1" if first[5][-1] != "1" else "7")
    name = first[0]
    height, width = cv2.imread(str(out / name)).shape[:2]
    taken = [Box(*map(float, r[1:5])) for r in rows if r[0] == name]
    corners = [Box(x, y, 30, 10) for x in (0, width - 30) for y in (0, height - 10)]
    empty = next(c for c in corners if all(c.intersection_area(t) == 0 for t in taken))
    rows.append([name, *(f"{v:g}" for v in (empty.x, empty.y, empty.w, empty.h)), "ZZ999"])
    labels.write_text("\n".join(["# file\tx\ty\tw\th\tPLATE", *("\t".join(r) for r in rows)]) + "\n")
    return out


def _anprd_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anprd.cli", "eval", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_eval_cli_reports_where_the_errors_are(scene_set):
    result = _anprd_eval(str(scene_set), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report) == OLD_KEYS | NEW_KEYS
    truth_rows = [r for r in (scene_set / "labels.tsv").read_text().splitlines() if r and r[0] != "#"]
    assert report["images"] == 4 and report["plates"] == len(truth_rows)
    assert report["missed"] + report["detected"] == report["plates"]
    assert report["missed"] >= 1 and 0 <= report["low_iou"] <= report["missed"]  # the 30x10 label
    kinds = report["misread_kinds"]
    assert list(kinds) == ["length", "one_i", "o_zero_d", "other"]
    assert sum(kinds.values()) == report["detected"] - report["read_exact"]
    confusions = report["confusions"]
    assert len(confusions) <= 10
    assert all(len(t) == len(r) == 1 and t != r and n >= 1 for t, r, n in confusions)
    assert confusions == sorted(confusions, key=lambda c: (-c[2], c[0], c[1]))
    assert report["detected"] >= 1 and 0 <= report["calibration_error"] <= 1

    shown = _anprd_eval(str(scene_set))  # the same run, for people: the table, then where the errors are
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    missed, low_iou = report["missed"], report["low_iou"]
    assert re.search(rf"^missed\s+{missed} \({low_iou} with a box off the plate", text, re.M)
    assert re.search(rf"^misread kinds\s+length {kinds['length']}, 1/I {kinds['one_i']}, "
                     rf"O/0/D/Q {kinds['o_zero_d']}, other {kinds['other']}$", text, re.M)
    assert re.search(r"^top confusions\s+\S", text, re.M)
    shown_ece = re.search(r"^calibration error\s+(\d\.\d{3}) \(ECE", text, re.M)
    assert shown_ece and float(shown_ece[1]) == pytest.approx(report["calibration_error"], abs=1e-3)
    reliability = re.findall(r"^\s+\d\.\d-\d\.\d\s+(\d+)\s", text, re.M)
    assert sum(map(int, reliability)) == report["detected"]
