"""`anprd eval` scoring on a tiny hand-made set."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from anprd.ctc import edit_distance
from anprd.evaluate import EvalError, evaluate, read_labels, score_image
from anprd.types import Box, Detection


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
    assert set(result) == {"images", "plates", "detected", "read_exact", "read_rate", "detection_recall",
                           "char_accuracy", "false_positives", "ms_per_image"}
    assert result["images"] == 3 and result["plates"] == 3 and result["detected"] == 3
    assert result["read_exact"] == 2 and result["read_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["false_positives"] == 1
    assert result["char_accuracy"] == pytest.approx(1 - 1 / 15, abs=1e-4)


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
