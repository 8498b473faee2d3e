"""``anprd replay``: a rendered clip through the real pipeline and model, scoring, and bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
from accuracy_floors import check

from anprd.config.detector import DetectorConfig
from anprd.replay import (
    SUMMARY_KEYS,
    ReplayError,
    TruthPlate,
    format_summary,
    read_truth,
    score_events,
    summary_json,
)
from anprd.types import Box, PlateEvent

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / DetectorConfig().model  # the shipped default model
SCHEMA_PATH = REPO / "schema" / "plate_event.schema.json"
# The contract of `--json`'s last line, written out rather than imported from the module under test.
EXPECTED_SUMMARY_KEYS = {
    "events", "truth_plates", "true_positives", "false_positives", "duplicates", "precision", "recall", "fps",
}
CLIP_FRAMES = 100  # --seconds 4 at 25 fps
REPLAY_TIMEOUT_S = 300  # generous: the machine may be shared with a training job


def _anprd(*args: str, timeout: float = REPLAY_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anprd.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


@pytest.fixture(scope="module")
def replayed(clip: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    """One replay of the clip with --truth, --json and --annotate, shared by the tests below."""
    video, truth = clip
    annotated = tmp_path_factory.mktemp("annotated") / "out.avi"
    result = _anprd("replay", str(video), "--truth", str(truth), "--json", "--annotate", str(annotated),
                    "--model", str(MODEL), "--camera-id", "lane1")
    assert result.returncode == 0, result.stderr
    return result, annotated


def test_json_ends_with_a_summary_of_exactly_the_documented_keys(replayed, clip: tuple[Path, Path]) -> None:
    result, _ = replayed
    with clip[1].open(newline="") as truth_file:
        truth_rows = [row for row in csv.reader(truth_file) if row and row[0] != "plate"]
    assert truth_rows
    lines = result.stdout.splitlines()
    assert lines, "no output"
    summary = json.loads(lines[-1])
    assert set(summary) == EXPECTED_SUMMARY_KEYS == set(SUMMARY_KEYS)
    events = [json.loads(line) for line in lines[:-1]]
    assert summary["events"] == sum(not e["provisional"] for e in events)
    assert summary["truth_plates"] == len(truth_rows)
    assert summary["true_positives"] + summary["false_positives"] + summary["duplicates"] == summary["events"]
    assert summary["fps"] > 0
    for key in ("precision", "recall"):
        assert summary[key] is None or 0.0 <= summary[key] <= 1.0
    assert summary["recall"] == pytest.approx(summary["true_positives"] / summary["truth_plates"])
    # The clip's cars cross in full view for over 40 frames: the model's own figures on it
    # (tests/accuracy_floors.py), each car reported once, by its plate, and nothing else.
    check(MODEL, "clip_replay", plates=summary["truth_plates"], true_positives=summary["true_positives"],
          false_positives=summary["false_positives"], duplicates=summary["duplicates"])


def test_every_other_line_is_an_event_that_validates_against_the_schema(replayed) -> None:
    result, _ = replayed
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    events = [json.loads(line) for line in result.stdout.splitlines()[:-1]]
    assert events, "the replay gave no event for a clip with a passing car"
    for event in events:
        validator.validate(event)
        assert event["camera_id"] == "lane1"
        assert 0 <= event["first_frame"] <= event["last_frame"] < CLIP_FRAMES
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))


def test_annotated_video_has_every_frame(replayed) -> None:
    _, annotated = replayed
    capture = cv2.VideoCapture(str(annotated))
    frames = 0
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            assert image.shape == (360, 640, 3)
            frames += 1
    finally:
        capture.release()
    assert frames == CLIP_FRAMES


# --- bad input: one line on stderr, exit status 2, before the model loads ---------------------


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("anprd replay: ")
    return lines[0]


def test_bad_truth_line_names_file_and_line(clip: tuple[Path, Path], tmp_path: Path) -> None:
    video, _ = clip
    truth = tmp_path / "truth.csv"
    truth.write_text("plate,first_frame,last_frame\nRR609OX,41,84\nAB12CDE,7\n")
    line = _one_line_error(_anprd("replay", str(video), "--truth", str(truth), "--json"))
    assert f"{truth}:3:" in line


def test_corrupt_video_is_a_one_line_error(tmp_path: Path) -> None:
    video = tmp_path / "corrupt.mp4"
    video.write_bytes(os.urandom(4096))
    line = _one_line_error(_anprd("replay", str(video), "--json"))
    assert str(video) in line


def test_a_video_cut_short_is_an_error_not_an_end(tmp_path: Path) -> None:
    # FFmpeg reports a cut-short file as the end of the stream; its header still lists every frame
    video = tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    rng = np.random.default_rng(3)
    for _ in range(40):
        writer.write(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    writer.release()
    whole = video.read_bytes()
    video.write_bytes(whole[: len(whole) // 2])
    result = _anprd("replay", str(video), "--json")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"anprd replay: {video}: decoding stopped at frame ")
    assert "of the 40 its header lists" in lines[0]


def test_missing_video_is_a_one_line_error(tmp_path: Path) -> None:
    line = _one_line_error(_anprd("replay", str(tmp_path / "nowhere.mp4")))
    assert "not found" in line


def test_unwritable_annotation_format_is_refused(clip: tuple[Path, Path], tmp_path: Path) -> None:
    video, _ = clip
    line = _one_line_error(_anprd("replay", str(video), "--annotate", str(tmp_path / "out.gif")))
    assert ".mp4" in line and ".avi" in line


def test_annotating_over_the_video_being_replayed_is_refused(clip: tuple[Path, Path], tmp_path: Path) -> None:
    # the writer truncated the input: 11 of 40 frames were replayed and the recording was lost
    video = tmp_path / "gate.mp4"
    video.write_bytes(clip[0].read_bytes())
    before = video.read_bytes()
    via_link = tmp_path / "same.mp4"
    via_link.symlink_to(video)
    line = _one_line_error(_anprd("replay", str(video), "--annotate", str(via_link)))
    assert "would overwrite the video being replayed" in line
    assert video.read_bytes() == before


# --- truth files and scoring -------------------------------------------------------------------


def test_truth_header_is_optional_and_plates_are_normalised(tmp_path: Path) -> None:
    with_header = tmp_path / "a.csv"
    with_header.write_text("plate,first_frame,last_frame\nab-12 cde,3,40\n\nXY99ZZZ,50,90\n")
    without = tmp_path / "b.csv"
    without.write_text("AB12CDE\nxy 99 zzz\n")
    assert read_truth(with_header) == [TruthPlate("AB12CDE", 3, 40, 2), TruthPlate("XY99ZZZ", 50, 90, 4)]
    assert [t.plate for t in read_truth(without)] == ["AB12CDE", "XY99ZZZ"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("AB12CDE,1,2,3\n", ":1: expected plate"),
        ("plate\n,1,2\n", ":2: empty plate"),
        ("AB12CDE,one,2\n", ":1: frame numbers must be integers"),
        ("AB12CDE,9,2\n", ":1: need 0 <= first_frame <= last_frame"),
        ("plate,first_frame,last_frame\n", ": no plates"),
        ("AB!!12,1,2\n", ":1: plate 'AB!!12' has characters other than A-Z and 0-9"),  # never matched
        ("ÄÖ12,1,2\n", ":1: plate 'ÄÖ12' has characters other than A-Z and 0-9"),
    ],
)
def test_bad_truth_files(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "truth.csv"
    path.write_text(text)
    with pytest.raises(ReplayError, match=problem) as info:
        read_truth(path)
    assert str(info.value).startswith(str(path))


def _event(plate: str, first: int = 0, last: int = 10, provisional: bool = False) -> PlateEvent:
    return PlateEvent(
        event_id="e", sequence=1, camera_id="c", plate=plate, confidence=0.9, candidates=(),
        box=Box(0, 0, 10, 5), first_seen=0.0, last_seen=1.0, first_frame=first, last_frame=last,
        frames_seen=5, provisional=provisional,
    )


def test_scoring_counts_true_and_false_positives_and_duplicates() -> None:
    truth = [TruthPlate("AB12CDE", 0, 50, 1), TruthPlate("XY99ZZZ", 60, 90, 2),
             TruthPlate("AB12CDE", 200, 250, 3)]  # the same car comes back
    events = [
        _event("AB-12 CDE", 5, 45),
        _event("AB12CDE", 5, 45, provisional=True),  # superseded: never scored
        _event("QQ11QQQ"),
        _event("AB12CDE", 210, 240),  # the second passage: a true positive
        _event("AB12CDE", 215, 245),  # both passages matched: a duplicate
    ]
    score = score_events(events, truth)
    assert (score.true_positives, score.false_positives, score.duplicates) == (2, 1, 1)
    assert score.missed == ("XY99ZZZ",)

    summary = summary_json(events, truth, fps=12.5)
    assert list(summary) == list(SUMMARY_KEYS)
    assert summary["events"] == 4
    assert summary["precision"] == 0.5 and summary["recall"] == pytest.approx(2 / 3, abs=1e-6)
    table = format_summary("clip.mp4", 100, summary, score.missed)
    assert "precision" in table and "0.500" in table and "XY99ZZZ" in table


def test_summary_without_truth_or_events_has_nulls_not_guesses() -> None:
    summary = summary_json([], None, fps=3.0)
    assert set(summary) == EXPECTED_SUMMARY_KEYS
    assert summary["events"] == 0 and summary["fps"] == 3.0
    assert all(summary[k] is None for k in EXPECTED_SUMMARY_KEYS - {"events", "fps"})
    assert summary_json([], [TruthPlate("AB1", None, None, 1)], fps=1.0)["precision"] is None


def test_replay_decodes_ahead_in_its_own_thread_and_processes_every_frame_in_order(
    sample_video: Path,
) -> None:
    from anprd.config import CameraConfig, CascadeConfig, ReplayPace, TrackerConfig
    from anprd.detector import PlateDetector
    from anprd.events import EventSequencer
    from anprd.grabber import open_source
    from anprd.pipeline import CameraPipeline
    from anprd.replay import run_source

    detector = PlateDetector(MODEL, DetectorConfig())
    camera = CameraConfig(id="file", url=str(sample_video), replay_pace=ReplayPace.FAST, queue_size=4)
    pipeline = CameraPipeline(camera, detector, TrackerConfig(), EventSequencer(), lambda event: None,
                              cascade=CascadeConfig())
    source = open_source(camera)
    sequences, depths = [], []

    def each(processed) -> None:
        sequences.append(processed.frame.sequence)
        depths.append(source.stats().queue_depth)  # frames decoded while this one was being detected

    try:
        seconds = run_source(source, pipeline, each)
    finally:
        source.stop()
    assert sequences == list(range(30)) and seconds > 0  # flat out: every frame, in order
    assert max(depths) > 0 and max(depths) <= 4  # the decoder ran ahead, into a bounded queue
    assert pipeline.cascade is not None and sum(pipeline.cascade.counts.values()) == 30


def test_replay_reads_the_cascade_section_of_its_config(clip: tuple[Path, Path], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"cameras: [{{id: x, url: {clip[0]}}}]\ncascade: {{new_plate_every: 0}}\n")
    result = _anprd("replay", str(clip[0]), "--config", str(config), "--json")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "cascade.new_plate_every" in result.stderr and "Traceback" not in result.stderr
