"""The command line: results as promised, and every bad input as one line with exit status 2."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from accuracy_floors import check, eval_report, write_eval_set
from conftest import without_root_file_access

from anprd.config.detector import DetectorConfig

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


def test_eval_a_labels_tsv_that_is_a_folder(tmp_path):
    (tmp_path / "labels.tsv").mkdir()
    assert_one_line_error(anprd("eval", str(tmp_path)), str(tmp_path / "labels.tsv"),
                          "is a folder, expected the labels file")


def test_eval_bad_labels_line(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "labels.tsv").write_text("# header\na.jpg\t1\t2\tthree\t4\tAB12\n")
    assert_one_line_error(anprd("eval", str(tmp_path)), "labels.tsv:2", "numbers")


def test_detect_a_truncated_jpeg(tmp_path):
    whole = tmp_path / "whole.jpg"
    cv2.imwrite(str(whole), np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[:2000])  # OpenCV decodes it, greyed at the bottom
    assert_one_line_error(anprd("detect", str(cut)), "cut.jpg", "truncated JPEG")


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with one tiny compressed row behind it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


def test_detect_an_image_too_large_to_decode(tmp_path):
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_claiming(200_000, 200_000))  # OpenCV refuses over 2^30 pixels with cv2.error
    assert_one_line_error(anprd("detect", str(huge)), "huge.png", "not a readable image")


def test_detect_an_image_it_may_not_read(tmp_path):
    image = tmp_path / "locked.png"
    cv2.imwrite(str(image), np.zeros((64, 128, 3), np.uint8))
    image.chmod(0)
    drop = without_root_file_access(image)  # root reads anything: drop that right for the command
    result = subprocess.run([*drop, sys.executable, "-m", "anprd.cli", "detect", str(image)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert_one_line_error(result, "locked.png", "ermission denied")


def test_a_folder_for_annotated_images_that_is_a_file(tmp_path):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((64, 128, 3), np.uint8))
    taken = tmp_path / "out"
    taken.write_text("a file")
    assert_one_line_error(anprd("detect", str(image), str(image), "--annotate", str(taken)),
                          str(taken), "annotated images")


def test_detect_annotates_latin1_names_and_same_names_from_two_folders(tmp_path):
    ok, png = cv2.imencode(".png", np.full((64, 128, 3), 90, np.uint8))
    inputs = [tmp_path / "x" / "a.png", tmp_path / "y" / "a.png", tmp_path / os.fsdecode(b"caf\xe9.png")]
    for path in inputs:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(png.tobytes())
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "anprd.cli", "detect", *map(os.fsencode, inputs),
                             "--annotate", str(out)], cwd=REPO, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    names = sorted(os.fsencode(p.name) for p in out.iterdir())
    assert names == [b"a-2.annotated.jpg", b"a.annotated.jpg", b"caf\xe9.annotated.jpg"]


def test_detect_annotates_an_image_given_twice_twice_and_never_over_its_input(tmp_path):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.full((64, 128, 3), 90, np.uint8))
    out = tmp_path / "out"
    result = anprd("detect", str(image), str(image), "--annotate", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a-2.annotated.jpg", "a.annotated.jpg"]
    before = image.read_bytes()
    assert_one_line_error(anprd("detect", str(image), "--annotate", str(image)),
                          "would overwrite the input image")
    assert image.read_bytes() == before


@pytest.mark.parametrize("plate", ["ÄB12", "AB.12"])
def test_eval_refuses_a_plate_the_reader_cannot_read(tmp_path, plate):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "labels.tsv").write_text(f"a.jpg\t1\t2\t3\t4\t{plate}\n", encoding="utf-8")
    assert_one_line_error(anprd("eval", str(tmp_path)), "labels.tsv:1", "A-Z and 0-9", plate)


def test_eval_refuses_a_box_that_is_not_a_number(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "labels.tsv").write_text("a.jpg\t1\t2\tnan\t4\tAB12\n")
    assert_one_line_error(anprd("eval", str(tmp_path)), "labels.tsv:1", "finite")


SHIPPED_MODEL = REPO / "models" / "anprd-v10"


def _shipped_meta(**changes) -> bytes:
    meta = json.loads((SHIPPED_MODEL / "model.json").read_text())
    return json.dumps({**meta, **changes}).encode()


def _shipped_net(**changes) -> dict:
    return {**json.loads((SHIPPED_MODEL / "model.json").read_text())["net"], **changes}


@pytest.mark.parametrize(("meta", "needle"), [
    (lambda: b"[]", "not an anprd plate model"),
    (lambda: _shipped_meta(net=None), 'bad "net" description'),
    (lambda: b"\xff\xfe\x00 not UTF-8", "unreadable model metadata"),
    (lambda: _shipped_meta(net=_shipped_net(stem=-1)), 'bad "net" description'),  # Keras refuses to build
    # a net the weights were not trained for: Keras' own message runs to 90 lines of tensors
    (lambda: _shipped_meta(net=_shipped_net(stem=_shipped_net()["stem"] * 2)), "cannot load weights"),
])
def test_a_corrupt_model_json_is_named(tmp_path, meta, needle):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_bytes(meta())
    shutil.copyfile(SHIPPED_MODEL / "weights.weights.h5", model / "weights.weights.h5")
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((64, 128, 3), np.uint8))
    assert_one_line_error(anprd("detect", str(image), "--model", str(model)), needle)


def test_train_passes_every_option_to_the_trainer(tmp_path):
    helped = anprd("train", "--help")
    assert helped.returncode == 0 and "--run" in helped.stdout and "--export" in helped.stdout
    missing = anprd("train", "--run", str(tmp_path / "never"), "--export", str(tmp_path / "out"))
    assert missing.returncode == 2 and "best.weights.h5 not found" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.fixture(scope="module")
def scene_set(tmp_path_factory) -> Path:
    """A small synthetic labelled set written by the generator's own CLI."""
    out = tmp_path_factory.mktemp("scenes")
    write_eval_set(out)
    return out


def test_eval_json_has_exactly_the_promised_keys_and_the_model_s_accuracy(scene_set):
    report = eval_report(scene_set)  # the default config, as a user runs it
    assert set(report) == {"images", "plates", "detected", "read_exact", "read_rate", "detection_recall",
                           "char_accuracy", "false_positives", "ms_per_image",  # and where plates are lost:
                           "missed", "low_iou", "misread_kinds", "confusions", "calibration_error"}
    truth_rows = [r for r in (scene_set / "labels.tsv").read_text().splitlines()[1:] if r]
    assert report["images"] == 12 and report["plates"] == len(truth_rows)
    # the default model's own figures on this set, a few points under (tests/accuracy_floors.py)
    check(DetectorConfig().model, "eval_set", plates=report["plates"], found=report["detected"],
          read=report["read_exact"], false_positives=report["false_positives"])


def _green(image: np.ndarray) -> np.ndarray:
    """Where `image` shows the annotation's box colour, pure green (0, 255, 0), after JPEG."""
    blue, green, red = (image[..., c].astype(int) for c in range(3))
    return (green > 150) & (green - red > 90) & (green - blue > 90)


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
    original, annotated = cv2.imread(str(image)), cv2.imread(str(out))
    assert annotated is not None and annotated.shape == original.shape
    # Each reported box is drawn as a green frame round the plate, where the scene (grey: the
    # generator draws grey scenes) had none; away from the boxes and their labels the picture is
    # the input's, give or take JPEG.
    assert not _green(original).any()
    drawn = _green(annotated)
    frames, labels = np.zeros(drawn.shape, bool), np.zeros(drawn.shape, bool)
    for found in report["plates"]:
        x, y, w, h = (int(round(found["box"][k])) for k in ("x", "y", "w", "h"))
        on_edges = np.concatenate([drawn[y, x:x + w], drawn[y + h, x:x + w], drawn[y:y + h, x],
                                   drawn[y:y + h, x + w]])
        assert on_edges.mean() > 0.9, (found["box"], on_edges.mean())
        inside = drawn[y + 4:y + h - 3, x + 4:x + w - 3]
        assert inside.size and not inside.any(), found["box"]  # a frame, not a filled box
        frames[max(0, y - 3):y + h + 4, max(0, x - 3):x + w + 4] = True
        labels[max(0, y - 40):y + h + 40, max(0, x - 4):] = True  # its text, above or below it
    assert not (drawn & ~frames).any()  # nothing green but the frames
    difference = np.abs(annotated.astype(int) - original.astype(int)).max(axis=2)
    assert np.percentile(difference[~(frames | labels)], 99) < 30


@pytest.mark.parametrize(("args", "needle"), [
    (["tcp://127.0.0.1:99999", "--timeout", "1"], "needs a port from 1 to 65535"),
    (["tcp://127.0.0.1:5999", "--timeout", "nan"], "--timeout: must be a finite number"),  # never timed out
    (["tcp://127.0.0.1:5999", "--max-events", "0"], "--max-events: must be at least 1"),
])
def test_subscribe_refuses_a_port_or_limit_it_could_not_honour(args, needle):
    result = anprd("subscribe", *args)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert needle in result.stderr.splitlines()[-1]


def test_a_jpeg_cut_in_half_but_ended_is_refused_in_one_line(tmp_path):
    # libjpeg decodes the missing half as grey and only complains on stderr
    noise = np.random.default_rng(5).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", noise)[1].tobytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    assert_one_line_error(anprd("detect", str(cut)), "cut.jpg", "corrupt image data")
