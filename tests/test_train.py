"""Training stops with a checkpoint, resumes where it stopped, and exports a loadable model."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anprd.config.detector import DetectorConfig

REPO = Path(__file__).resolve().parent.parent


def train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train.train", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_stop_resume_and_export(tmp_path):
    run = tmp_path / "run"
    common = ["--run", str(run)]
    first = train(*common, "--steps", "6", "--batch-size", "8", "--val-count", "24", "--val-every", "2",
                  "--seed", "3", "--max-minutes", "0")  # stops after its first step, with a checkpoint
    assert first.returncode == 0, first.stderr
    state = json.loads((run / "state.json").read_text())
    assert state["step"] == 1

    again = train(*common, "--steps", "6")  # a second fresh start into the same folder is refused
    assert again.returncode == 2 and "--resume" in again.stderr

    resumed = train(*common, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout + resumed.stderr
    assert json.loads((run / "state.json").read_text())["step"] == 6
    with open(run / "log.csv") as fh:
        steps = [int(row["step"]) for row in csv.DictReader(fh)]
    assert steps == [1, 2, 4, 6]

    out = tmp_path / "model"
    exported = train(*common, "--export", str(out))
    assert exported.returncode == 0, exported.stderr
    meta = json.loads((out / "model.json").read_text())
    assert meta["seed"] == 3 and meta["steps_trained"] == 6 and "--max-minutes" in meta["command"]
    assert {"read_acc", "char_acc", "presence_acc"} <= set(meta["validation"])

    from anprd.detector import PlateDetector

    detector = PlateDetector(out, DetectorConfig())
    assert isinstance(detector.detect(np.zeros((120, 240, 3), np.uint8)), list)


@pytest.mark.parametrize("program", ["train.train", "train.train_reader"])
def test_exporting_an_untrained_run_is_a_one_line_error(tmp_path, program):
    result = subprocess.run([sys.executable, "-m", program, "--run", str(tmp_path / "empty"),
                             "--export", str(tmp_path / "model")], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{program.removeprefix('train.')}: {tmp_path / 'empty' / 'best.weights.h5'} not found: "
        f"{tmp_path / 'empty'} has not been trained (or is not a run folder)"]
    assert not (tmp_path / "model").exists()


def test_second_stage_starts_from_the_first_and_export_lists_both(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    small = ["--batch-size", "8", "--val-count", "16", "--val-every", "2"]
    assert train("--run", str(first), "--steps", "2", "--seed", "4", *small).returncode == 0
    staged = train("--run", str(second), "--init-from", str(first), "--steps", "2", "--seed", "5", *small)
    assert staged.returncode == 0, staged.stderr
    assert "initialised from" in staged.stdout + staged.stderr
    with open(second / "log.csv") as fh:
        assert [float(row["difficulty"]) for row in csv.DictReader(fh)] == [1.0]  # no second curriculum

    out = tmp_path / "model"
    assert train("--run", str(second), "--export", str(out)).returncode == 0
    stages = json.loads((out / "model.json").read_text())["stages"]
    assert [stage["seed"] for stage in stages] == [4, 5]
    assert [stage["steps"] for stage in stages] == [2, 2]

    # a stage started from an exported model's weights file inherits that model's stages
    third = tmp_path / "third"
    staged = train("--run", str(third), "--init-from", str(out / "weights.weights.h5"), "--steps", "2",
                   "--seed", "6", "--balance-backgrounds", *small)
    assert staged.returncode == 0, staged.stderr
    assert train("--run", str(third), "--export", str(tmp_path / "model3")).returncode == 0
    meta = json.loads((tmp_path / "model3" / "model.json").read_text())
    assert [stage["seed"] for stage in meta["stages"]] == [4, 5, 6]
    assert meta["balance_backgrounds"] is True


def train_reader(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train.train_reader", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def copy_detector_only(out):
    """The shipped model folder without its readers: what `train.train --export` writes."""
    import shutil

    shutil.copytree(REPO / DetectorConfig().model, out, ignore=shutil.ignore_patterns("reader*"))
    meta = json.loads((out / "model.json").read_text())
    meta.pop("readers", None)
    (out / "model.json").write_text(json.dumps(meta))


def test_reader_stops_resumes_and_joins_a_model_folder(tmp_path):
    run = tmp_path / "reader"
    first = train_reader("--run", str(run), "--steps", "4", "--batch-size", "8", "--val-count", "16",
                         "--val-every", "2", "--seed", "6", "--max-minutes", "0")
    assert first.returncode == 0, first.stderr
    assert json.loads((run / "state.json").read_text())["step"] == 1
    resumed = train_reader("--run", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "state.json").read_text())["step"] == 4

    out = tmp_path / "model"
    refused = train_reader("--run", str(run), "--export", str(out))  # no detector there yet
    assert refused.returncode != 0 and "model.json" in refused.stderr
    copy_detector_only(out)
    assert train_reader("--run", str(run), "--export", str(out)).returncode == 0
    meta = json.loads((out / "model.json").read_text())
    assert [(r["seed"], r["steps_trained"]) for r in meta["readers"]] == [(6, 4)]
    assert meta["stages"]  # the detector's own record is kept
    assert train_reader("--run", str(run), "--export", str(out)).returncode == 0  # again: replaced, not added
    assert len(json.loads((out / "model.json").read_text())["readers"]) == 1

    from anprd.detector import PlateDetector

    assert len(PlateDetector(out, DetectorConfig()).readers) == 1
    assert PlateDetector(out, DetectorConfig(reader="window")).readers == []


def test_reader_second_stage_starts_from_the_first_and_export_lists_both(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    small = ["--batch-size", "8", "--val-count", "16", "--val-every", "2"]
    assert train_reader("--run", str(first), "--steps", "2", "--seed", "7", *small).returncode == 0
    staged = train_reader("--run", str(second), "--init-from", str(first), "--steps", "2", "--seed", "8",
                          *small)
    assert staged.returncode == 0, staged.stderr
    assert "initialised from" in staged.stdout + staged.stderr
    with open(second / "log.csv") as fh:
        assert [float(row["difficulty"]) for row in csv.DictReader(fh)] == [1.0]  # no second curriculum

    out = tmp_path / "model"
    copy_detector_only(out)
    assert train_reader("--run", str(second), "--export", str(out)).returncode == 0
    assert train_reader("--run", str(first), "--export", str(out)).returncode == 0
    readers = json.loads((out / "model.json").read_text())["readers"]
    assert [[stage["seed"] for stage in reader["stages"]] for reader in readers] == [[7, 8], [7]]
