"""The command line: results as promised, and every bad input as one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def anprd(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anprd.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_detect_missing_file(tmp_path):
    assert_one_line_error(anprd("detect", str(tmp_path / "nope.jpg")), "nope.jpg", "no such file")


def test_detect_not_an_image(tmp_path):
    fake = tmp_path / "fake.jpg"
    fake.write_text("this is text")
    assert_one_line_error(anprd("detect", str(fake)), "fake.jpg", "not a readable image")


def test_detect_a_folder(tmp_path):
    assert_one_line_error(anprd("detect", str(tmp_path)), str(tmp_path), "folder")


def test_detect_missing_model(tmp_path):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((64, 128, 3), np.uint8))
    assert_one_line_error(anprd("detect", str(image), "--model", str(tmp_path / "no-model")),
                          "model not found", "no-model")


def test_eval_empty_folder(tmp_path):
    assert_one_line_error(anprd("eval", str(tmp_path)), "labels.tsv", "missing")


def test_eval_bad_labels_line(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "labels.tsv").write_text("# header\na.jpg\t1\t2\tthree\t4\tAB12\n")
    assert_one_line_error(anprd("eval", str(tmp_path)), "labels.tsv:2", "numbers")


@pytest.fixture(scope="module")
def scene_set(tmp_path_factory) -> Path:
    """A small synthetic labelled set written by the generator's own CLI."""
    out = tmp_path_factory.mktemp("scenes")
    result = subprocess.run([sys.executable, "-m", "train.gen", "--scenes", "--count", "4", "--out", str(out),
                             "--seed", "77", "--difficulty", "0.3"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


def test_eval_json_has_exactly_the_promised_keys(scene_set):
    result = anprd("eval", str(scene_set), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report) == {"images", "plates", "detected", "read_exact", "read_rate", "detection_recall",
                           "char_accuracy", "false_positives", "ms_per_image"}
    truth_rows = [r for r in (scene_set / "labels.tsv").read_text().splitlines()[1:] if r]
    assert report["images"] == 4 and report["plates"] == len(truth_rows)
    assert report["detected"] >= 0.5 * report["plates"]  # working end to end; accuracy: README


def test_detect_json_and_annotate(scene_set, tmp_path):
    image = sorted(scene_set.glob("*.jpg"))[0]
    out = tmp_path / "annotated.jpg"
    result = anprd("detect", str(image), "--json", "--annotate", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["image"] == str(image) and report["plates"]
    plate = report["plates"][0]
    assert set(plate) >= {"plate", "confidence", "candidates", "box"}
    assert len(plate["candidates"]) <= 5 and plate["candidates"][0]["plate"] == plate["plate"]
    annotated = cv2.imread(str(out))
    assert annotated is not None and annotated.shape == cv2.imread(str(image)).shape
    assert (annotated != cv2.imread(str(image))).any()
