"""Accuracy floors: what the shipped models must still score on the tests' own data.

``FLOORS[model folder name][data set]`` holds the figures measured with that model on the data set
(``measured``) and the floor the tests hold it to (``floor``): `floor_from` puts it a few points
under the measurement (4% of the plates, at least one plate, none on sets under 10 plates), so that
a real regression fails the suite while a plate near a threshold flipping on another CPU does
not. ``found``, ``read``, ``covered`` and ``true_positives`` must reach their floor;
``false_positives`` and ``duplicates`` must not exceed theirs. A test looks its floors up by the
model folder named in the config it runs with (`floors`), so a new default model without floors
fails at once, naming the command below.

The data sets (`DATA`): generated scenes for tests/test_detector.py and tests/test_prefilter.py, a
scene folder written by ``train.gen`` for tests/test_cli.py, and conftest's rendered clip for
tests/test_replay.py. They come from the generator, so a generator change can move the figures too
(one that changes the number of plates fails as "the data set changed"). To re-measure (when the
model changes, the floors move with it in the same commit), from the repository root::

    .venv/bin/python -m tests.accuracy_floors --measure                  # the default config's model
    .venv/bin/python -m tests.accuracy_floors --measure --model models/anprd-v10

It prints entries to paste into ``FLOORS``: the model's, and the pre-filters' (HOG, proposal
network), in about 1 minute on 2 cores. The figures below were measured so on 2026-12-07 (2 cores,
TensorFlow 2.21 CPU), with the generator of commit 20ff21d (anprd-v10 and hog-v1; proposer-v1 the
same day, with this generator; anprd-v10's again the same day, after the detector's second
verification pass on refined boxes and the proposal network's border past the frame's edges).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# Every data set a floor is measured on, in one place: the tests build theirs from these.
DATA: dict[str, Any] = {
    # generated_scenes(**...) for the detector with the full pyramid and with each pre-filter
    "scenes": {"seed": 2024, "count": 24, "size": (640, 400), "plate_width": (90, 200), "difficulty": 0.3},
    # wide plates, found by the whole-scanned coarse levels alone (pre-filter margin 3: no region)
    "wide_plates": {"seed": 77, "count": 6, "size": (640, 400), "plate_width": (170, 240), "difficulty": 0.2},
    # the pre-filters' proposals (HOG and the proposal network)
    "proposal_scenes": {"seed": 31337, "count": 10, "size": (960, 540), "plate_width": (70, 220),
                        "difficulty": 0.5},
    # `python -m train.gen ARGS --out DIR`, then `anprd eval DIR --json` with the default config
    "eval_set": ["--scenes", "--count", "12", "--seed", "77", "--difficulty", "0.3"],
}
WIDE_PLATES_THRESHOLD = 3.0  # a pre-filter margin no window reaches: only whole levels are scanned

LOWER_IS_BETTER = frozenset({"false_positives", "duplicates"})

FLOORS: dict[str, dict[str, dict[str, dict[str, int]]]] = {
    "anprd-v10": {
        "scenes_pyramid": {
            "measured": {"plates": 48, "found": 48, "read": 47, "false_positives": 4},
            "floor": {"found": 46, "read": 45, "false_positives": 6},
        },
        "scenes_hog": {
            "measured": {"plates": 48, "found": 47, "read": 46, "false_positives": 4},
            "floor": {"found": 45, "read": 44, "false_positives": 6},
        },
        "scenes_proposer": {
            "measured": {"plates": 48, "found": 48, "read": 47, "false_positives": 3},
            "floor": {"found": 46, "read": 45, "false_positives": 5},
        },
        "wide_plates_whole_levels": {
            "measured": {"plates": 12, "found": 12, "read": 12, "false_positives": 0},
            "floor": {"found": 11, "read": 11, "false_positives": 1},
        },
        "eval_set": {
            "measured": {"plates": 23, "found": 23, "read": 23, "false_positives": 6},
            "floor": {"found": 22, "read": 22, "false_positives": 7},
        },
        "clip_replay": {
            "measured": {"plates": 2, "true_positives": 2, "false_positives": 0, "duplicates": 0},
            "floor": {"true_positives": 2, "false_positives": 0, "duplicates": 0},
        },
    },
    "hog-v1": {
        "proposals": {
            "measured": {"plates": 23, "covered": 22},
            "floor": {"covered": 21},
        },
    },
    "proposer-v1": {
        "proposals": {
            "measured": {"plates": 23, "covered": 23},
            "floor": {"covered": 22},
        },
    },
}


def floor_from(measured: dict[str, int]) -> dict[str, int]:
    """The floor for `measured` figures: 4% of the plates under (over, for errors) each figure, at
    least one plate; on sets under 10 plates the measurement itself."""
    plates = measured["plates"]
    margin = max(1, round(0.04 * plates)) if plates >= 10 else 0
    return {key: value + margin if key in LOWER_IS_BETTER else max(0, value - margin)
            for key, value in measured.items() if key != "plates"}


def floors(model: str | Path, data_set: str) -> dict[str, dict[str, int]]:
    """``{"measured": ..., "floor": ...}`` of the model folder `model` (a path or its name) on
    `data_set`; fails naming the command that measures them when there are none."""
    name = Path(model).name
    entry = FLOORS.get(name, {}).get(data_set)
    if entry is None:
        raise AssertionError(f"no accuracy floors for model {name} on {data_set!r} in "
                             "tests/accuracy_floors.py; measure them with: "
                             f"python -m tests.accuracy_floors --measure --model {model}")
    return entry


def check(model: str | Path, data_set: str, **figures: int) -> None:
    """Assert that `figures` (``plates=`` and the counts) meet the floors of `model` on `data_set`."""
    entry = floors(model, data_set)
    measured, floor = entry["measured"], entry["floor"]
    name = Path(model).name
    summary = f"{name} on {data_set}: now {figures}, measured {measured}, floor {floor}"
    assert figures["plates"] == measured["plates"], f"the data set changed (re-measure the floors): {summary}"
    for key, limit in floor.items():
        if key in LOWER_IS_BETTER:
            assert figures[key] <= limit, f"{key} {figures[key]} > {limit}: {summary}"
        else:
            assert figures[key] >= limit, f"{key} {figures[key]} < {limit}: {summary}"


# --- measuring -----------------------------------------------------------------------------------


def _scene_figures(detector, data: dict[str, Any]) -> dict[str, int]:
    from generated_scenes import generated_scenes, score_detector

    score = score_detector(detector, generated_scenes(**data))
    return {"plates": score.plates, "found": score.found, "read": score.read,
            "false_positives": score.false_positives}


def proposal_coverage(prefilter, data: dict[str, Any]) -> tuple[int, int, float]:
    """(plates, plates whose centre a proposed region holds, mean fraction of a frame proposed)."""
    from generated_scenes import generated_scenes

    plates = covered = 0
    area = 0.0
    scenes = generated_scenes(**data)
    for image, truth in scenes:
        gray = image[:, :, 0].copy()  # sample_scene draws gray scenes
        regions = prefilter.propose(gray)
        for x0, y0, x1, y1 in regions:
            assert 0 <= x0 < x1 <= gray.shape[1] and 0 <= y0 < y1 <= gray.shape[0]
            area += (x1 - x0) * (y1 - y0) / gray.size
        for (x, y, w, h), _ in truth:
            plates += 1
            cx, cy = x + w / 2, y + h / 2
            covered += any(x0 <= cx <= x1 and y0 <= cy <= y1 for x0, y0, x1, y1 in regions)
    return plates, covered, area / len(scenes)


def eval_report(folder: Path, *args: str) -> dict[str, Any]:
    """``anprd eval FOLDER --json ARGS`` run as the user runs it; its report."""
    result = subprocess.run([sys.executable, "-m", "anprd.cli", "eval", str(folder), "--json", *args],
                            cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_eval_set(out: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "train.gen", *DATA["eval_set"], "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


def replay_summary(video: Path, truth: Path, model: str | Path, *args: str) -> tuple[list[dict], dict]:
    """``anprd replay VIDEO --truth TRUTH --json --model MODEL ARGS``: (events, summary)."""
    result = subprocess.run([sys.executable, "-m", "anprd.cli", "replay", str(video), "--truth", str(truth),
                             "--json", "--model", str(model), *args], cwd=REPO, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    return [json.loads(line) for line in lines[:-1]], json.loads(lines[-1])


def measure(model: Path) -> dict[str, dict[str, dict[str, dict[str, int]]]]:
    """Every data set's figures with `model` (and the default config's pre-filter)."""
    sys.path.insert(0, str(Path(__file__).parent))  # generated_scenes, conftest
    from conftest import render_clip

    from anprd.config.detector import DetectorConfig
    from anprd.detector import PlateDetector
    from cascade.hog import HogPrefilter
    from cascade.proposer import PlateProposer

    def entry(figures: dict[str, int]) -> dict[str, dict[str, int]]:
        print(f"  {figures}", file=sys.stderr)
        return {"measured": figures, "floor": floor_from(figures)}

    config = DetectorConfig(model=str(model))
    found: dict[str, dict[str, dict[str, int]]] = {}
    print("scenes, full pyramid", file=sys.stderr)
    pyramid = PlateDetector.from_config(config.model_copy(update={"prefilter": "none"}), REPO)
    found["scenes_pyramid"] = entry(_scene_figures(pyramid, DATA["scenes"]))
    print("scenes, HOG pre-filter", file=sys.stderr)
    hog = PlateDetector.from_config(config.model_copy(update={"prefilter": "hog"}), REPO)
    found["scenes_hog"] = entry(_scene_figures(hog, DATA["scenes"]))
    print("scenes, proposal network", file=sys.stderr)
    proposer = PlateDetector.from_config(config.model_copy(update={"prefilter": "proposer"}), REPO)
    found["scenes_proposer"] = entry(_scene_figures(proposer, DATA["scenes"]))
    print("wide plates, whole levels only", file=sys.stderr)
    hog.config = config.model_copy(update={"prefilter": "hog", "prefilter_threshold": WIDE_PLATES_THRESHOLD})
    found["wide_plates_whole_levels"] = entry(_scene_figures(hog, DATA["wide_plates"]))
    with tempfile.TemporaryDirectory() as folder:
        print("eval set (anprd eval)", file=sys.stderr)
        write_eval_set(Path(folder) / "scenes")
        report = eval_report(Path(folder) / "scenes", "--model", str(model))
        found["eval_set"] = entry({"plates": report["plates"], "found": report["detected"],
                                   "read": report["read_exact"],
                                   "false_positives": report["false_positives"]})
        print("clip (anprd replay)", file=sys.stderr)
        video, truth = render_clip(Path(folder))
        _, summary = replay_summary(video, truth, model)
        found["clip_replay"] = entry({"plates": summary["truth_plates"]} | {
            key: summary[key] for key in ("true_positives", "false_positives", "duplicates")})
    entries = {model.name: found}
    prefilters = (HogPrefilter.load("models/hog-v1", REPO), PlateProposer.load("models/proposer-v1", REPO))
    for prefilter in prefilters:
        print(f"{prefilter.model_dir.name} proposals", file=sys.stderr)
        plates, covered, _ = proposal_coverage(prefilter, DATA["proposal_scenes"])
        entries[prefilter.model_dir.name] = {"proposals": entry({"plates": plates, "covered": covered})}
    return entries


def format_entries(entries: dict[str, dict[str, dict[str, dict[str, int]]]]) -> str:
    """`entries` laid out as in ``FLOORS``, to paste there."""
    lines = []
    for model, data_sets in entries.items():
        lines.append(f'    "{model}": {{')
        for data_set, entry in data_sets.items():
            lines.append(f'        "{data_set}": {{')
            lines += [f'            "{key}": {json.dumps(values)},' for key, values in entry.items()]
            lines.append("        },")
        lines.append("    },")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.accuracy_floors",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--measure", action="store_true", required=True,
                        help="measure the figures and print entries for FLOORS")
    parser.add_argument("--model", type=Path, help="model folder (default: the default config's)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from anprd.config.detector import DetectorConfig
    from anprd.detector import resolve_model_dir

    model = resolve_model_dir(str(args.model or DetectorConfig().model), REPO)
    print(format_entries(measure(model)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
