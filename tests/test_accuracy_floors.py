"""tests/accuracy_floors.py itself: each floor follows its measurement, and a figure under it fails."""

from __future__ import annotations

import pytest
from accuracy_floors import FLOORS, check, floor_from, floors

from anprd.config.detector import DetectorConfig


def test_every_floor_sits_a_few_points_under_its_measurement():
    # by the file's one rule, so that no floor is loosened (or tightened) by hand
    for model, data_sets in FLOORS.items():
        for data_set, entry in data_sets.items():
            assert entry["floor"] == floor_from(entry["measured"]), (model, data_set)
    assert floor_from({"plates": 48, "read": 47, "false_positives": 3}) == {"read": 45, "false_positives": 5}
    assert floor_from({"plates": 2, "true_positives": 2, "duplicates": 0}) == {"true_positives": 2,
                                                                                "duplicates": 0}


def test_the_default_model_has_floors_and_a_figure_past_one_fails():
    model = DetectorConfig().model
    entry = floors(model, "scenes_pyramid")
    measured, floor = entry["measured"], entry["floor"]
    check(model, "scenes_pyramid", **measured)
    with pytest.raises(AssertionError, match=r"^read \d+ < "):
        check(model, "scenes_pyramid", **(measured | {"read": floor["read"] - 1}))
    with pytest.raises(AssertionError, match=r"^false_positives \d+ > "):
        check(model, "scenes_pyramid", **(measured | {"false_positives": floor["false_positives"] + 1}))
    with pytest.raises(AssertionError, match="the data set changed"):
        check(model, "scenes_pyramid", **(measured | {"plates": measured["plates"] + 1}))


def test_a_model_without_floors_names_the_command_that_measures_them():
    command = "python -m tests.accuracy_floors --measure --model models/anprd-v0"
    with pytest.raises(AssertionError, match=command):
        floors("models/anprd-v0", "scenes_pyramid")
