"""`make bench`'s helpers that decide what is compared (its figures are printed, never asserted)."""

import numpy as np
import pytest

from anprd.bench import SHIFTS, main, shifted


def test_a_shifted_frame_moves_its_content_and_keeps_its_size():
    frame = np.random.default_rng(3).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    moved = shifted(frame, 5, 2)
    assert moved.shape == frame.shape
    assert np.array_equal(moved[2:, 5:], frame[:-2, :-5])
    assert np.array_equal(moved[:2, 5:], np.repeat(frame[:1, :-5], 2, axis=0))  # edge rows repeated


def test_the_shifts_take_every_grid_phase_once_in_each_direction():
    assert sorted(dx for dx, _ in SHIFTS) == list(range(8)) == sorted(dy for _, dy in SHIFTS)


def test_more_shifts_than_there_are_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--shifts", str(len(SHIFTS) + 1)])
    assert exit_info.value.code == 2
    assert "--shifts must be 0 to 8" in capsys.readouterr().err
