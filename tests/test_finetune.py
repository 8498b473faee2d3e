"""`anprd finetune`: the split by file, the user's plates as reader crops, refusals of bad folders as
one line, and a tiny generated labelled folder fine-tuned end to end into a model folder that loads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from anprd.evaluate import LabelledImage, read_labels
from anprd.types import Box
from train.finetune import (
    MIN_PLATES,
    augment_plate,
    cut_plate,
    formats_line,
    names_hash,
    plate_formats,
    split_images,
)

REPO = Path(__file__).resolve().parent.parent
EVAL_KEYS = {"images", "plates", "detected", "read_exact", "read_rate", "detection_recall", "char_accuracy",
             "false_positives", "ms_per_image"}


def finetune(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anprd.cli", "finetune", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def photos(count: int, plates_each: int = 2) -> list[LabelledImage]:
    return [LabelledImage(Path(f"/photos/img{i:03d}.jpg"),
                          [(Box(10 * k, 5, 60, 20), f"AB{i:03d}{k}") for k in range(plates_each)])
            for i in range(count)]


# -- the split --------------------------------------------------------------------------------------
def test_split_is_by_file_disjoint_and_reproducible():
    images = photos(40)
    split = split_images(images, 0.25, seed=7)
    train = [i.path.name for i in split.train]
    held = [i.path.name for i in split.heldout]
    assert len(held) == 10 and len(train) == 30
    assert not set(train) & set(held) and sorted(train + held) == sorted(i.path.name for i in images)
    # every plate of a photo stays with its photo
    assert sum(len(i.plates) for i in split.train) == 60 and sum(len(i.plates) for i in split.heldout) == 20
    assert train == sorted(train) and held == sorted(held)
    # the same seed gives the same split whatever the order of labels.tsv; another seed another split
    shuffled = [images[i] for i in np.random.default_rng(3).permutation(len(images))]
    again = split_images(shuffled, 0.25, seed=7)
    assert [i.path.name for i in again.heldout] == held
    assert [i.path.name for i in split_images(images, 0.25, seed=8).heldout] != held
    # not simply the last files by name
    assert held != sorted(i.path.name for i in images)[-10:]


def test_split_by_name_holds_out_the_last_files_by_name():
    images = photos(9)[::-1]
    split = split_images(images, 0.5, seed=1, by_name=True)
    assert [i.path.name for i in split.train] == [f"img{i:03d}.jpg" for i in range(5)]
    assert [i.path.name for i in split.heldout] == [f"img{i:03d}.jpg" for i in range(5, 9)]
    assert split.method == "by name"


def test_split_keeps_one_photo_out_when_a_fraction_rounds_to_none_and_none_for_holdout_zero():
    assert len(split_images(photos(3), 0.1, seed=1).heldout) == 1
    assert len(split_images(photos(3), 0.0, seed=1).heldout) == 0
    assert len(split_images(photos(2), 0.9, seed=1).train) == 1


def test_names_hash_depends_on_the_names_not_their_order():
    images = photos(5)
    assert names_hash(images) == names_hash(images[::-1])
    assert names_hash(images) != names_hash(images[:4])


def test_the_formats_of_three_or_more_plates_are_reported_commonest_first():
    def image(*texts: str) -> LabelledImage:
        return LabelledImage(Path("/photos/x.jpg"), [(Box(0, 0, 60, 20), t) for t in texts])

    images = [image("RK291AT", "BA302OZ"), image("KE123AB", "5TGN556"), image("ZA834CO", "B21GSE"),
              image("8XYZ123", "1ABC234")]
    assert list(plate_formats(images).items()) == [("@@###@@", 4), ("#@@@###", 3)]
    assert plate_formats(images, min_plates=1) == {"@@###@@": 4, "#@@@###": 3, "@##@@@": 1}
    assert plate_formats(images[:1]) == {}


def test_the_formats_line_says_what_the_check_read_and_whether_the_folder_keeps_them():
    check = {"plates_read": 54, "right_without": 48, "right_with": 49}
    record = {"formats": {"@@###@@": 38, "@@#####": 3},
              "formats_prior": {"plates": 54, "used": True, "leave_one_out": check}}
    line = formats_line(record)
    assert line.startswith("your plates' formats as a reading prior (@@###@@ (38), @@##### (3), ...): ")
    assert "reads 48 of 54 training plates right without, 49 with" in line and line.endswith("turns it off)")
    record["formats"], record["formats_prior"]["used"] = {}, False
    assert "(none of 3 or more plates)" in formats_line(record) and formats_line(record).endswith("not used")
    record["formats"], record["formats_prior"]["plates"] = {"@@###@@": 54}, 54
    assert "(@@###@@ (54)):" in formats_line(record)  # every plate's format listed: no "..."


# -- the user's plates as crops ---------------------------------------------------------------------
def test_a_plate_at_the_image_edge_is_cut_with_context_and_augmented_to_reader_crops():
    gray = np.full((100, 200), 90, np.uint8)
    cv2.rectangle(gray, (150, 80), (199, 99), 230, -1)  # a plate running off the bottom-right corner
    plate = cut_plate(gray, (150, 80, 210, 110), None, "AB12")
    # half a plate width each side, 1.5 plate heights above and below; the image's border repeated
    assert plate.patch.shape == (120, 120) and plate.label_box == (30, 45, 90, 75)
    assert plate.patch[47, 32] == 230 and plate.patch[110, 110] == 230 and plate.patch[40, 20] == 90
    rng = np.random.default_rng(1)
    crops = [augment_plate(rng, plate) for _ in range(20)]
    assert all(c.image.shape == (32, 128) and c.image.dtype == np.uint8 for c in crops)
    assert all(c.text == "AB12" and c.char_x == () for c in crops)  # CTC only: no character places
    assert len({c.image.tobytes() for c in crops}) == 20  # every crop drawn anew
    # the plate fills the middle of the crop as the detector's crops have it
    assert all(c.image[12:20, 40:88].mean() > c.image[:, :4].mean() for c in crops[:5])


def test_a_large_plate_is_shrunk_and_both_boxes_move_with_it():
    gray = np.zeros((1000, 1500), np.uint8)
    plate = cut_plate(gray, (100, 400, 700, 700), (110, 410, 690, 690), "X1")
    assert plate.label_box[2] - plate.label_box[0] == pytest.approx(256)
    assert plate.detected_box is not None
    assert plate.detected_box[0] - plate.label_box[0] == pytest.approx(10 * 256 / 600)


# -- refusals: one line, exit status 2 ----------------------------------------------------------------
def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("anprd finetune: ")
    return lines[0]


def _labelled(folder: Path, rows: list[str], images: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        cv2.imwrite(str(folder / f"p{i:02d}.jpg"), np.full((60, 120, 3), 128, np.uint8))
    (folder / "labels.tsv").write_text("".join(row + "\n" for row in rows))
    return folder


def test_a_folder_without_labels_is_refused(tmp_path):
    (tmp_path / "photos").mkdir()
    line = _one_line_error(finetune(str(tmp_path / "photos"), "--out", str(tmp_path / "out")))
    assert "labels.tsv: missing" in line
    assert not (tmp_path / "out").exists()


def test_a_bad_labels_line_is_refused_naming_the_line(tmp_path):
    folder = _labelled(tmp_path / "photos", ["p00.jpg\t1\t2\t30\t10\tAB12", "p00.jpg\t1\t2\t30"])
    line = _one_line_error(finetune(str(folder), "--out", str(tmp_path / "out")))
    assert "labels.tsv:2:" in line


def test_too_few_plates_are_refused_saying_how_many_are_needed(tmp_path):
    rows = [f"p{i:02d}.jpg\t1\t2\t30\t10\tAB{i:02d}" for i in range(24)]
    folder = _labelled(tmp_path / "photos", rows, images=24)
    line = _one_line_error(finetune(str(folder), "--out", str(tmp_path / "out")))  # 19 of 24 train
    assert f"needs at least {MIN_PLATES} labelled plates" in line and "found 19" in line
    line = _one_line_error(finetune(str(folder), "--out", str(tmp_path / "out"), "--holdout", "1"))
    assert "--holdout" in line


def test_an_output_folder_in_use_is_refused(tmp_path):
    rows = [f"p{i:02d}.jpg\t1\t2\t30\t10\tAB{i:02d}" for i in range(30)]
    folder = _labelled(tmp_path / "photos", rows, images=30)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.json").write_text("{}")
    line = _one_line_error(finetune(str(folder), "--out", str(tmp_path / "out")))
    assert "not empty" in line
    assert (tmp_path / "out" / "model.json").read_text() == "{}"


# -- end to end ---------------------------------------------------------------------------------------
def generated_folder(folder: Path, seed: int, plates_wanted: int) -> None:
    """Photos of generated plates with labels.tsv in the `anprd eval` format."""
    from train.fonts import available_fonts
    from train.gen import Backgrounds, builtin_background_dirs, sample_scene

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    backgrounds, fonts = Backgrounds(builtin_background_dirs(), rng), available_fonts()
    rows: list[str] = []
    while len(rows) < plates_wanted:
        image, plates = sample_scene(rng, backgrounds, fonts, size=(640, 360), max_plates=3,
                                     plate_width=(90, 170), difficulty=0.3)
        name = f"photo{len(list(folder.glob('*.jpg'))):03d}.jpg"
        cv2.imwrite(str(folder / name), image)
        rows += [f"{name}\t{x}\t{y}\t{w}\t{h}\t{text}" for (x, y, w, h), text in plates]
    (folder / "labels.tsv").write_text("\n".join(rows) + "\n")


def test_a_tiny_generated_folder_fine_tunes_end_to_end(tmp_path):
    import h5py

    photos_dir = tmp_path / "photos"
    generated_folder(photos_dir, seed=5, plates_wanted=30)
    base = tmp_path / "base"  # the shipped model, with a calibration the fine-tuned reader must drop
    shutil.copytree(REPO / "models" / "anprd-v9", base)
    base_meta = json.loads((base / "model.json").read_text())
    base_meta["calibration"] = {"a": 1.2, "b": 0.1}
    (base / "model.json").write_text(json.dumps(base_meta))
    out = tmp_path / "tuned"

    result = finetune(str(photos_dir), "--out", str(out), "--model", str(base), "--steps", "3",
                      "--batch-size", "8", "--check-count", "8", "--holdout", "0.25", "--seed", "4",
                      "--detector", "--detector-steps", "2", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(printed["before"]) == EVAL_KEYS == set(printed["after"])
    assert printed["formats"] == plate_formats(split_images(read_labels(photos_dir), 0.25, seed=4).train)
    # the training labels' formats, checked leave-one-out on the base model's reads of them
    check = printed["formats_prior"]
    assert check["plates"] == 30 - printed["before"]["plates"]
    loo = check["leave_one_out"]
    assert 0 < loo["plates_read"] <= check["plates"] and 0 <= loo["right_without"] <= loo["plates_read"]
    assert check["used"] == (loo["right_with"] >= loo["right_without"])

    meta = json.loads((out / "model.json").read_text())
    record = meta["finetune"]
    assert record["base_model"] == str(base) and record["steps"] == 3 and record["seed"] == 4
    assert "--steps 3" in record["command"] and record["command"].startswith("anprd finetune ")
    assert record["heldout_before"] == printed["before"] and record["heldout_after"] == printed["after"]
    assert record["minutes"] is not None and record["data"] == str(photos_dir.resolve())
    split = split_images(read_labels(photos_dir), 0.25, seed=4)
    assert record["train_files_sha256"] == names_hash(split.train)
    assert record["split"]["heldout_images"] == len(split.heldout) == record["heldout_before"]["images"]
    listed = json.loads((out / "finetune-split.json").read_text())
    assert listed["heldout"] == [i.path.name for i in split.heldout]
    assert not set(listed["train"]) & set(listed["heldout"])
    assert "calibration" not in meta and "calibration_dropped" in meta
    if check["used"]:  # the folder carries them as its reading prior, else it carries none
        assert meta["formats"]["counts"] == plate_formats(split.train, min_plates=1)
    else:
        assert "formats" not in meta

    # one reader, the fine-tuned one, whose weights moved from the base reader's
    assert [r["weights"] for r in meta["readers"]] == ["reader-r9-ft.weights.h5"]
    assert not (out / "reader-r9.weights.h5").exists()
    # the fine-tuned detection network in place of the base's, model.json pointing at it
    assert meta["weights"] == "weights-ft.weights.h5" and not (out / "weights.weights.h5").exists()
    detector = record["detector"]
    assert detector["fine_tuned"] and detector["steps"] == 2 and detector["weights"] == meta["weights"]
    assert detector["photos"] == len(split.train)
    assert set(detector["window_check"]["after"]) == {"synthetic", "yours"}
    assert "read_acc" not in detector["window_check"]["after"]["yours"]  # no text in your windows
    assert meta["stages"][-1]["command"] == record["command"]
    assert meta["finetuned_from"] == "weights.weights.h5"

    def arrays(path: Path) -> list[np.ndarray]:
        with h5py.File(path) as f:
            found: list[np.ndarray] = []
            f.visititems(lambda _, obj: found.append(obj[()]) if isinstance(obj, h5py.Dataset) else None)
            return found

    for tuned_name, base_name in (("reader-r9-ft.weights.h5", "reader-r9.weights.h5"),
                                  ("weights-ft.weights.h5", "weights.weights.h5")):
        tuned, before = arrays(out / tuned_name), arrays(base / base_name)
        assert len(tuned) == len(before)
        assert any(not np.array_equal(a, b) for a, b in zip(tuned, before, strict=True))

    from anprd.config.detector import DetectorConfig
    from anprd.detector import PlateDetector

    # exported as `make export` does: the fine-tuned folder runs without TensorFlow
    exported = meta["exported"]["files"]
    assert {"detection.onnx", "window.onnx", "reader-r9-ft.onnx", "reader-r9-ft.int8.onnx"} <= set(exported)
    assert exported["reader-r9-ft.onnx"]["from"] == "reader-r9-ft.weights.h5"
    assert sorted(p.name for p in out.glob("*.onnx")) == sorted(exported)
    assert record["exported"].startswith("float32 and int8 ONNX")
    detector = PlateDetector(out, DetectorConfig(model=str(out)))
    assert detector.device == "onnxruntime float32 on CPU (3 of 3 networks)", detector.device
    assert len(detector.readers) == 1
    item = split.heldout[0]
    found = detector.detect(cv2.imread(str(item.path)))
    assert any(d.box.iou(box) >= 0.3 for d in found for box, _ in item.plates)


def test_evaluate_images_scores_only_the_images_given(tmp_path):
    from anprd.evaluate import EvalError, evaluate_images
    from anprd.types import Detection

    folder = _labelled(tmp_path / "photos", [f"p{i:02d}.jpg\t10\t10\t40\t12\tAB{i:02d}" for i in range(3)], 3)
    images = read_labels(folder)

    def detect(_image: np.ndarray) -> list[Detection]:
        return [Detection(box=Box(10, 10, 40, 12), presence=1.0, text="AB01", confidence=0.9)]

    report = evaluate_images(images[1:], detect)
    assert (report.images, report.plates, report.detected, report.read_exact) == (2, 2, 2, 1)
    with pytest.raises(EvalError):
        evaluate_images([], detect)


def test_lookalikes_merge_into_one_class_and_the_blank_stays_last():
    from anprd.ctc import ALPHABET
    from train.finetune import merged_classes

    matrix = merged_classes(("0O", "1I"))
    assert matrix.shape == (len(ALPHABET) + 1, len(ALPHABET) + 1 - 2)
    assert (matrix.sum(axis=1) == 1).all()  # every class lands in exactly one merged class
    target = matrix.argmax(axis=1)
    assert target[ALPHABET.index("O")] == target[ALPHABET.index("0")]
    assert target[ALPHABET.index("I")] == target[ALPHABET.index("1")]
    assert target[ALPHABET.index("D")] != target[ALPHABET.index("0")]
    assert target[len(ALPHABET)] == matrix.shape[1] - 1
    assert len(set(target.tolist())) == matrix.shape[1]
    assert (merged_classes(()) == np.eye(len(ALPHABET) + 1)).all()


def test_your_plates_do_not_teach_which_lookalike_a_glyph_is_unless_asked():
    import keras

    from anprd.ctc import ALPHABET
    from train.finetune import LOOKALIKES, _training

    # a fixed model (seeded: unseeded weights drew, once in many runs, logits under which "AO1" and
    # "ADI" cost the same to within 0.1%); seed 0 sets the texts 2-3% apart
    keras.utils.set_random_seed(0)
    image = keras.Input((32, 128, 1))
    scaled = keras.layers.Rescaling(1 / 255)(image)
    logits = keras.layers.Reshape((32, 37))(keras.layers.Dense(32 * 37)(keras.layers.Flatten()(scaled)))
    model = keras.Model(image, {"text": logits})
    n = 4
    images = np.random.default_rng(0).integers(0, 255, (n, 32, 128, 1)).astype(np.uint8)

    def real_loss(text: str, lookalikes: tuple[str, ...]) -> float:
        _, step = _training(model, 10, 1e-12, 1.0, lookalikes)  # a learning rate that changes nothing
        labels = np.zeros((n, 10), np.int32)
        labels[:, : len(text)] = [ALPHABET.index(c) for c in text]
        return float(step(images, labels, np.full(n, len(text), np.int32), np.full((n, 32), 36, np.int32),
                          np.zeros(n, np.float32), np.ones(n, np.float32))[1])

    assert real_loss("AO1", LOOKALIKES) == pytest.approx(real_loss("A0I", LOOKALIKES), rel=1e-5)
    assert real_loss("AO1", ()) != pytest.approx(real_loss("A0I", ()), rel=1e-3)
    assert real_loss("AO1", LOOKALIKES) != pytest.approx(real_loss("ADI", LOOKALIKES), rel=1e-3)


# -- the presence fine-tune's windows ----------------------------------------------------------------
def test_detector_windows_are_labelled_by_the_presence_rule_in_the_window_convention():
    from train.finetune import WINDOW_KINDS, RealPhoto, detector_window, make_window_batch
    from train.gen import presence_label

    rng = np.random.default_rng(3)
    gray = rng.integers(0, 255, (360, 640)).astype(np.uint8)
    gray[150:190, 200:290] = 230  # a bright plate-sized patch where the label says
    photo = RealPhoto(gray, [(200.0, 150.0, 290.0, 190.0)], [True], [(500.0, 20.0, 560.0, 40.0)])
    windows = [detector_window(rng, photo) for _ in range(300)]
    assert {w.kind for w in windows} <= set(WINDOW_KINDS)
    assert all(w.image.shape == (64, 128) and w.image.dtype == np.uint8 for w in windows)
    assert all(w.present == presence_label(w.box) for w in windows if w.present)
    assert all(w.present == (w.kind == "positive") for w in windows)
    present = [w for w in windows if w.present]
    assert 0.3 < len(present) / len(windows) < 0.65
    # the plate is where the box says: brighter than the window around it
    for w in present[:20]:
        x0, y0, x1, y1 = (round(v) for v in w.box)
        inside = w.image[y0 + 3: y1 - 3, x0 + 3: x1 - 3]
        assert inside.mean() > w.image.mean()
    batch = make_window_batch(windows)
    assert batch["image"].shape == (300, 64, 128, 1)
    assert (batch["box"][batch["present"] > 0] >= 0).all() and (batch["box"][batch["present"] > 0] <= 1).all()
    assert not batch["read"].any() and not batch["columns_ok"].any() and not batch["label_len"].any()
    # every kind of negative turns up, each negative by the rule
    assert {"truncated", "too_small", "too_big", "background"} <= {w.kind for w in windows if not w.present}


def test_the_detector_fine_tune_can_be_left_out_and_its_options_are_checked():
    from train.finetune import FinetuneError, _check_options, build_parser

    parser = build_parser("anprd finetune")
    assert parser.parse_args(["d", "--out", "o"]).detector is None  # auto: when the base misses plates
    assert parser.parse_args(["d", "--out", "o", "--no-detector"]).detector is False
    for bad in (["--detector-steps", "0"], ["--detector-lr", "0"], ["--detector-real-fraction", "0"],
                ["--detector-real-weight", "-1"]):
        with pytest.raises(FinetuneError, match="--detector"):
            _check_options(parser.parse_args(["d", "--out", "o", *bad]))


def test_a_model_json_names_its_detection_weights_inside_the_folder(tmp_path):
    from anprd.config.detector import DetectorConfig
    from anprd.detector import ModelError, PlateDetector

    model = tmp_path / "model"
    shutil.copytree(REPO / "models" / "anprd-v9", model)
    meta = json.loads((model / "model.json").read_text())
    for bad in ("../weights.weights.h5", "", 3):
        (model / "model.json").write_text(json.dumps({**meta, "weights": bad}))
        with pytest.raises(ModelError, match='"weights"'):
            PlateDetector(model, DetectorConfig(model=str(model), prefilter="none"))
    (model / "model.json").write_text(json.dumps({**meta, "weights": "missing.weights.h5"}))
    with pytest.raises(ModelError, match="missing.weights.h5"):
        PlateDetector(model, DetectorConfig(model=str(model), prefilter="none"))
