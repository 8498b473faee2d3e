"""A short run of the fault table (scripts/faults.py, `make faults`): the same case functions on real
processes, with 2 RTSP kill/restart cycles instead of 20, the daemon SIGKILLed once, and no time
limits (the suite asserts no durations; `make faults` checks them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_faults() -> ModuleType:
    spec = importlib.util.spec_from_file_location("faults", REPO_ROOT / "scripts" / "faults.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["faults"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


faults = load_faults()


def test_bad_inputs_are_refused_with_one_line(tmp_path: Path) -> None:
    rows = faults.run_cases(["bad_inputs"], tmp_path, limits=None)
    assert len(rows) == len(faults._bad_inputs(tmp_path))
    failed = [row for row in rows if not row.passed]
    assert failed == [], failed


def test_rtsp_server_killed_twice_and_hung_once(tmp_path: Path) -> None:
    if not Path(faults.SYSTEM_PYTHON).is_file():
        pytest.fail(f"{faults.SYSTEM_PYTHON} (GStreamer, for the RTSP server) is missing: run `make setup`")
    rows = faults.run_cases(["rtsp_kill_restart", "rtsp_hang"], tmp_path, limits=None, cycles=2)
    assert [row.case for row in rows] == ["RTSP server killed and restarted (2x)",
                                          "RTSP server hung (SIGSTOP) and resumed"]
    failed = [row for row in rows if not row.passed]
    assert failed == [], failed


def test_daemon_sigkilled_and_restarted_goes_on_numbering(tmp_path: Path) -> None:
    rows = faults.run_cases(["daemon_sigkill"], tmp_path, limits=None)
    assert [row.case for row in rows] == ["daemon SIGKILLed and restarted", "sequence after a SIGKILL"]
    failed = [row for row in rows if not row.passed]
    assert failed == [], failed


def test_a_case_that_raises_is_a_failed_row_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    def broken(rig: object) -> list[object]:
        raise RuntimeError("daemon did not become ready")

    monkeypatch.setitem(faults.CASES, "broken", broken)
    rows = faults.run_cases(["broken"], tmp_path, limits=None)
    assert len(rows) == 1 and rows[0].passed is False
    assert "daemon did not become ready" in rows[0].observed
    rows = faults.run_cases(["bad_inputs"], tmp_path, limits=None, budget_s=-1.0)
    assert len(rows) == 1 and rows[0].passed is False and "budget" in rows[0].observed  # not run
