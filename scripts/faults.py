"""The fault table: real processes on loopback, one fault each, one row per case (``make faults``).

Every case runs the real daemon (``anprd run`` with a config of its own, JSON logs read from its
stderr), the real RTSP test server (``scripts/rtsp_server.py`` under Debian's python3) and real
subscribers (``anprd subscribe``), injects one fault and reports::

    case | expected | observed | pass/fail

and the script exits 1 if any case fails (2 if it cannot start). Everything is bounded: each wait
has a deadline, and the whole table stops at ``--budget-s`` (600 s), failing the cases left.

Usage::

    .venv/bin/python scripts/faults.py [--cycles 20] [--only rtsp_kill_restart,bad_inputs] [--no-limits]

``--no-limits`` drops the time limits (reconnect <= 2 s, hang noticed <= 5 s, a bad config refused
within 1 s) and keeps the functional checks; ``tests/test_faults.py`` runs a short subset that way
(the test suite asserts no durations). Each case is one function ``case_NAME(rig) -> list[Row]``,
listed in ``CASES``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["CASES", "Limits", "Rig", "Row", "main", "run_cases"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"  # the RTSP server needs Debian's GStreamer bindings
RTSP_SERVER = REPO_ROOT / "scripts" / "rtsp_server.py"
CLIP = REPO_ROOT / "samples" / "clip.mp4"

START_DEADLINE_S = 180.0  # daemon start: TensorFlow and the model load (slow on shared cores)
EVENT_DEADLINE_S = 180.0  # events come when a passage ends: ~1 per 2 s of clip, slower when busy
STEP_DEADLINE_S = 30.0  # anything else: a loss noticed, a server restarted, a process exiting


@dataclass(frozen=True)
class Limits:
    """The time limits the issue sets; None in a check means: not timed (tests)."""

    reconnect_s: float = 2.0  # streaming again after the RTSP server's return
    hang_s: float = 5.0  # a SIGSTOPped server noticed
    # `anprd run` refusing a bad config (before TensorFlow loads), in CPU seconds: the wall time
    # doubles when other work shares the cores (0.4-0.7 s alone, 1-2 s at load 16 on 2 cores),
    # while TensorFlow's import alone costs several CPU seconds.
    bad_config_cpu_s: float = 1.0


@dataclass
class Row:
    case: str
    expected: str
    observed: str
    passed: bool


# ---- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LineReader:
    """Collects a pipe's lines with their arrival time (monotonic) on a thread."""

    def __init__(self, stream: Any, parse: Callable[[str], Any]) -> None:
        self.items: list[tuple[float, Any]] = []
        self._condition = threading.Condition()
        self._parse = parse
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for raw in stream:
            item = self._parse(raw.decode("utf-8", errors="replace").rstrip("\n"))
            with self._condition:
                self.items.append((time.monotonic(), item))
                self._condition.notify_all()

    def mark(self) -> int:
        with self._condition:
            return len(self.items)

    def wait_for(self, predicate: Callable[[Any], bool], after: int, timeout: float
                 ) -> tuple[float, Any] | None:
        """The first item from index `after` on that satisfies `predicate`, or None at the deadline."""
        deadline = time.monotonic() + timeout
        index = after
        with self._condition:
            while True:
                while index < len(self.items):
                    if predicate(self.items[index][1]):
                        return self.items[index]
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._condition.wait(remaining)

    def count(self, predicate: Callable[[Any], bool], after: int = 0) -> int:
        with self._condition:
            return sum(predicate(item) for _, item in self.items[after:])

    def values(self) -> list[Any]:
        """The items so far, without their times."""
        with self._condition:
            return [item for _, item in self.items]

    def finish(self, timeout: float = STEP_DEADLINE_S) -> None:
        """Wait for the pipe's end (after its process exited): every line it wrote is in `items`."""
        self._thread.join(timeout)


def _log_record(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return {"msg": line, "raw": True}  # before logging starts (a one-line error), or a crash
    return record if isinstance(record, dict) else {"msg": line, "raw": True}


def _message(record: dict[str, Any]) -> str:
    return str(record.get("msg", ""))


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> int | None:
    """SIGTERM (SIGCONT first, in case it was stopped), then SIGKILL after `timeout`."""
    if process is None or process.poll() is not None:
        return None if process is None else process.returncode
    for signum in (signal.SIGCONT, signal.SIGTERM):
        process.send_signal(signum)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=timeout)


def first_line_out(process: subprocess.Popen[bytes], what: str, log: Path) -> bytes:
    """The first line `process` writes to its stdout pipe (its address); RuntimeError naming `what`
    and the end of its `log` if it exits or says nothing within STEP_DEADLINE_S."""
    assert process.stdout is not None
    buffer = b""
    deadline = time.monotonic() + STEP_DEADLINE_S
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{what} did not start: {log.read_text()[-500:]!r}")
            if selector.select(0.1):
                buffer += os.read(process.stdout.fileno(), 4096)
    return buffer.split(b"\n")[0]


class RtspServer:
    """``scripts/rtsp_server.py`` on loopback; keeps its port across restarts."""

    def __init__(self, frames_dir: Path, log: Path) -> None:
        self.frames_dir, self.log, self.port = frames_dir, log, 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/stream"

    def start(self) -> float:
        """Start (on the same port after a restart); returns the monotonic time of READY."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [SYSTEM_PYTHON, str(RTSP_SERVER), "--frames-dir", str(self.frames_dir), "--port",
                 str(self.port), "--codec", "h264", "--fps", "25", "--loop"],
                stdout=subprocess.PIPE, stderr=log)
        line = first_line_out(self.process, "RTSP server", self.log)
        ready_at = time.monotonic()
        self.port = int(line.decode().rsplit(":", 1)[1].split("/")[0])
        return ready_at

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=STEP_DEADLINE_S)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)


class Daemon:
    """``anprd run --config CONFIG``; its JSON log records are collected in `log`."""

    def __init__(self, config: Path, fsize_limit: int | None = None) -> None:
        self.config = config
        self.fsize_limit = fsize_limit
        self.process: subprocess.Popen[bytes] | None = None
        self.log: LineReader | None = None

    def start(self) -> float:
        """Start and wait for `ready`; returns the seconds it took. RuntimeError if it did not."""
        limit = self.fsize_limit

        def limit_file_size() -> None:  # runs in the child before exec
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "anprd.cli", "run", "--config", str(self.config)],
            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, preexec_fn=limit_file_size if limit is not None else None)
        self.log = LineReader(self.process.stderr, _log_record)
        ready = self.log.wait_for(lambda r: _message(r).startswith("ready:") or r.get("raw", False),
                                  0, START_DEADLINE_S)
        if ready is None or ready[1].get("raw"):
            tail = [_message(r) for _, r in self.log.items[-5:]]
            stop_process(self.process)
            raise RuntimeError(f"daemon did not become ready: {tail}")
        return ready[0] - started

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int | None:
        return stop_process(self.process)


def _event(line: str) -> dict[str, Any] | None:
    """A printed event, or None for a line cut short (its process was killed while writing)."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


class Subscriber:
    """``anprd subscribe ENDPOINT [OPTIONS]``; the events it prints are collected in `events`, its
    stderr goes to `log` (None: discarded)."""

    def __init__(self, endpoint: str, *options: str, log: Path | None = None) -> None:
        with open(log or os.devnull, "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "anprd.cli", "subscribe", endpoint, *options], cwd=REPO_ROOT,
                stdout=subprocess.PIPE, stderr=stderr)
        self.events = LineReader(self.process.stdout, _event)
        self.log = log

    def received(self) -> list[dict[str, Any]]:
        """The whole events printed so far, in order."""
        return [event for event in self.events.values() if event is not None]

    def sequences(self) -> list[int]:
        return [event["sequence"] for event in self.received()]

    def wait_events(self, count: int, timeout: float = EVENT_DEADLINE_S) -> bool:
        target = self.events.mark() + count - 1
        return self.events.wait_for(lambda e: True, target, timeout) is not None

    def stop(self) -> None:
        stop_process(self.process, timeout=5)

    def kill(self) -> None:
        """SIGKILL, and read what it printed to the end."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=STEP_DEADLINE_S)
        self.events.finish()


def spooled(spool: Path) -> list[dict[str, Any]]:
    """The events of a spool file's whole lines, in order (a cut or damaged line is skipped, as
    the daemon's own readers do)."""
    events = []
    data = spool.read_bytes() if spool.exists() else b""
    for line in data.split(b"\n")[:-1]:  # the part after the last newline is not a whole line
        try:
            event = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def wait_spooled(spool: Path, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float
                 ) -> list[dict[str, Any]] | None:
    """The spool's events once `predicate` holds for them, or None at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        events = spooled(spool)
        if predicate(events):
            return events
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def _span(events: list[dict[str, Any]]) -> str:
    """`first..last (count)` of the events' sequences, for an observation."""
    if not events:
        return "none"
    return f"{events[0].get('sequence')}..{events[-1].get('sequence')} ({len(events)})"


def _write_frames(folder: Path, count: int = 50) -> Path:
    """Small frames for the RTSP server (no plates: the RTSP cases watch the grabber only)."""
    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 255, 320, dtype=np.uint8)
    for index in range(count):
        image = np.dstack([np.tile(ramp, (240, 1))] * 3)
        cv2.rectangle(image, ((index * 5) % 260, 40), ((index * 5) % 260 + 60, 100), (255, 255, 255), -1)
        cv2.imwrite(str(folder / f"{index:05d}.jpg"), image)
    return folder


@dataclass(frozen=True)
class ClipDaemon:
    """The clip daemon and where to reach it."""

    daemon: Daemon
    endpoint: str  # publisher (PUB)
    catchup: str  # publisher.catchup_endpoint
    spool: Path


@dataclass
class Rig:
    """Shared set-up for the cases: a work folder, and daemons and servers started on demand
    (one RTSP daemon, one clip daemon) and stopped by :meth:`close`."""

    workdir: Path
    limits: Limits | None
    cycles: int = 20
    _rtsp: tuple[Daemon, RtspServer] | None = None
    _clip: ClipDaemon | None = None
    _processes: list[Any] = field(default_factory=list)

    def config(self, name: str, camera: dict[str, Any], spool: Path | None = None,
               **publisher: Any) -> tuple[Path, str]:
        """Write a daemon config (`publisher`: more publisher keys); returns (path, publisher
        endpoint)."""
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        config = {
            "cameras": [camera],
            "publisher": {"endpoint": endpoint, "spool_path": str(spool) if spool else None,
                          **publisher},
            "metrics": {"enabled": False},
            "logging": {"format": "json", "level": "INFO"},
        }
        path = self.workdir / f"{name}.yaml"
        path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        return path, endpoint

    def rtsp_daemon(self) -> tuple[Daemon, RtspServer]:
        if self._rtsp is None:
            server = RtspServer(_write_frames(self.workdir / "frames"), self.workdir / "rtsp.log")
            self._processes.append(server)
            server.start()
            config, _ = self.config("rtsp", {"id": "cam", "url": server.url})
            daemon = Daemon(config)
            self._processes.append(daemon)
            daemon.start()
            self._rtsp = (daemon, server)
        return self._rtsp

    def clip_daemon(self) -> ClipDaemon:
        """A daemon replaying the bundled clip in a loop at its frame rate, with a spool and a
        catch-up endpoint."""
        if self._clip is None:
            spool = self.workdir / "spool" / "events.jsonl"
            spool.parent.mkdir(exist_ok=True)
            catchup = f"tcp://127.0.0.1:{free_port()}"
            config, endpoint = self.config("clip", self.clip_camera(), spool, catchup_endpoint=catchup)
            daemon = Daemon(config)
            self._processes.append(daemon)
            daemon.start()
            self._clip = ClipDaemon(daemon, endpoint, catchup, spool)
        return self._clip

    @staticmethod
    def clip_camera() -> dict[str, Any]:
        return {"id": "clip", "url": str(CLIP), "loop": True, "replay_pace": "realtime"}

    def subscriber(self, endpoint: str, *options: str, log: str | None = None) -> Subscriber:
        """`anprd subscribe ENDPOINT OPTIONS`, stopped by :meth:`close`; `log`: keep its stderr in
        the work folder under this name."""
        subscriber = Subscriber(endpoint, *options, log=self.workdir / log if log else None)
        self._processes.append(subscriber)
        return subscriber

    def close(self) -> None:
        for process in reversed(self._processes):
            if isinstance(process, RtspServer):
                process.kill()
            else:
                process.stop()


# ---- the cases ------------------------------------------------------------------------------


def _within(value: float, limit: float | None) -> bool:
    return limit is None or value <= limit


def case_rtsp_kill_restart(rig: Rig) -> list[Row]:
    """RTSP server SIGKILLed, down 1 s, restarted on its port; `cycles` times."""
    daemon, server = rig.rtsp_daemon()
    assert daemon.log is not None
    limit = rig.limits.reconnect_s if rig.limits else None
    times: list[float] = []
    failures: list[str] = []
    for cycle in range(rig.cycles):
        mark = daemon.log.mark()
        server.kill()
        if daemon.log.wait_for(lambda r: "no frame from" in _message(r), mark, STEP_DEADLINE_S) is None:
            failures.append(f"cycle {cycle + 1}: loss not logged")
            server.start()
            continue
        time.sleep(1.0)
        mark = daemon.log.mark()
        ready_at = server.start()
        back = daemon.log.wait_for(lambda r: "first frame" in _message(r), mark, STEP_DEADLINE_S)
        if back is None:
            failures.append(f"cycle {cycle + 1}: not streaming {STEP_DEADLINE_S:.0f} s after the return")
            continue
        times.append(back[0] - ready_at)
    observed = f"{len(times)}/{rig.cycles} cycles streaming again"
    if times:
        observed += (f"; after the server's return: median {statistics.median(times):.2f} s, "
                     f"max {max(times):.2f} s")
    if failures:
        observed += "; " + "; ".join(failures[:3])
    passed = not failures and len(times) == rig.cycles and _within(max(times, default=0), limit)
    expected = f"streaming again in every cycle{f', within {limit:g} s' if limit else ''}"
    return [Row(f"RTSP server killed and restarted ({rig.cycles}x)", expected, observed,
                passed and daemon.alive)]


def case_rtsp_hang(rig: Rig) -> list[Row]:
    """RTSP server SIGSTOPped (connection open, nothing sent), then SIGCONTed."""
    daemon, server = rig.rtsp_daemon()
    assert daemon.log is not None
    limit = rig.limits.hang_s if rig.limits else None
    mark = daemon.log.mark()
    server.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    lost = daemon.log.wait_for(lambda r: "no frame from" in _message(r), mark, STEP_DEADLINE_S)
    mark_back = daemon.log.mark()
    server.signal(signal.SIGCONT)
    back = daemon.log.wait_for(lambda r: "first frame" in _message(r), mark_back, STEP_DEADLINE_S)
    if lost is None:
        observed = f"not noticed within {STEP_DEADLINE_S:.0f} s"
    else:
        observed = f"noticed after {lost[0] - stopped_at:.2f} s; " + (
            "streaming again after SIGCONT" if back else "not streaming again after SIGCONT")
    passed = lost is not None and back is not None and _within(lost[0] - stopped_at, limit)
    expected = f"loss noticed{f' within {limit:g} s' if limit else ''}, streaming again after resume"
    return [Row("RTSP server hung (SIGSTOP) and resumed", expected, observed, passed and daemon.alive)]


def case_subscriber_restart(rig: Rig) -> list[Row]:
    """A subscriber following with catch-up is SIGKILLed mid-stream, and while events go on it is
    started again with ``--since`` the last sequence it printed: together the two runs must print
    the spool's events from the first one's first on, each exactly once, in order."""
    clip = rig.clip_daemon()
    name = "subscriber killed and restarted mid-stream (--catchup --since N)"
    expected = ("together, the killed and the restarted subscriber print every spooled event from "
                "the first one's first on exactly once, in order (catch-up, then live)")
    first = rig.subscriber(clip.endpoint, "--catchup", clip.catchup, log="subscriber-1.log")
    got_first = first.wait_events(2)
    first.kill()
    before = first.received()
    if not got_first or not before:
        return [Row(name, expected, f"the first subscriber printed {len(before)} events in "
                    f"{EVENT_DEADLINE_S:.0f} s", False)]
    last = before[-1]["sequence"]
    # Events published while it is down reach the restarted subscriber from the spool only.
    at_restart = wait_spooled(clip.spool, lambda events: bool(events)
                              and events[-1]["sequence"] >= last + 2, EVENT_DEADLINE_S)
    if at_restart is None:
        return [Row(name, expected, f"no 2 events published in {EVENT_DEADLINE_S:.0f} s after the "
                    "kill", False)]
    newest = at_restart[-1]["sequence"]
    second = rig.subscriber(clip.endpoint, "--catchup", clip.catchup, "--since", str(last),
                            log="subscriber-2.log")
    # ... until it prints one published after it started: the hand-over to live is done.
    live = second.events.wait_for(lambda e: e is not None and e.get("sequence", 0) > newest, 0,
                                  EVENT_DEADLINE_S)
    second.kill()
    after = second.received()
    stream = before[0].get("stream")
    spool = [event for event in spooled(clip.spool) if event.get("stream") == stream
             and before[0]["sequence"] <= event["sequence"] <= (after or before)[-1]["sequence"]]
    printed = before + after
    sequences = [event["sequence"] for event in printed]
    repeated = sorted({sequence for sequence in sequences if sequences.count(sequence) > 1})
    missing = sorted({event["sequence"] for event in spool} - set(sequences))
    observed = (f"first printed {_span(before)}, killed; {newest - last} published while it was "
                f"down; restarted with --since {last}: printed {_span(after)}; spool holds "
                f"{_span(spool)} in that span")
    if printed != spool:
        observed += (f"; repeated {repeated[:5]}, missing {missing[:5]}" if repeated or missing
                     else "; same sequences but not the spooled events, or out of order")
    else:
        observed += "; identical to the spool"
    passed = live is not None and printed == spool and clip.daemon.alive
    if live is None:
        observed += f"; nothing live within {EVENT_DEADLINE_S:.0f} s of the restart"
    return [Row(name, expected, observed, passed)]


def case_daemon_sigkill(rig: Rig) -> list[Row]:
    """The daemon SIGKILLed while events flow, then started again on the same config and spool:
    the spool holds whole lines only, the same subscriber gets events again, and the numbering
    goes on (same stream, the spool's last sequence + 1)."""
    clip = rig.clip_daemon()
    daemon = clip.daemon
    subscriber = rig.subscriber(clip.endpoint)
    got = subscriber.wait_events(1)
    assert daemon.process is not None
    daemon.process.kill()
    daemon.process.wait(timeout=STEP_DEADLINE_S)
    data = clip.spool.read_bytes() if clip.spool.exists() else b""
    whole = data.endswith(b"\n") or not data
    before = spooled(clip.spool)
    whole = whole and len(before) == data.count(b"\n")  # every line an event
    mark = subscriber.events.mark()
    try:
        restart_s = daemon.start()
    except RuntimeError as exc:
        return [Row("daemon SIGKILLed and restarted", "restarts; spool whole; events flow again",
                    f"did not restart: {exc}", False),
                Row("sequence after a SIGKILL", "the numbering goes on", "not restarted", False)]
    got_again = subscriber.wait_events(1)
    observed = (f"spool {len(before)} events, {'whole lines' if whole else 'a cut line'}; ready again "
                f"after {restart_s:.1f} s; subscriber received events again: {got_again}")
    rows = [Row("daemon SIGKILLed and restarted", "restarts; the spool holds whole lines only; the "
                "same subscriber receives events again", observed, got and whole and got_again)]

    expected = ("the restarted daemon goes on with the same stream from the spool's last sequence "
                "+ 1; the spool numbers its events once each, with no hole")
    spool = wait_spooled(clip.spool, lambda events: len(events) > len(before), EVENT_DEADLINE_S)
    if not before or spool is None:
        return [*rows, Row("sequence after a SIGKILL", expected, f"spool before the kill: "
                           f"{len(before)} events; after the restart: no new event", False)]
    last, first_new = before[-1], spool[len(before)]
    live = [event for event in subscriber.events.values()[mark:] if event is not None]
    sequences = [event.get("sequence") for event in spool]
    streams = {event.get("stream") for event in spool}
    consecutive = sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    live_ok = bool(live) and all(event.get("stream") == last.get("stream")
                                 and event["sequence"] > last["sequence"] for event in live)
    observed = (f"last before the kill: {last['sequence']} of stream {str(last.get('stream'))[:8]}; "
                f"first after the restart: {first_new['sequence']} of stream "
                f"{str(first_new.get('stream'))[:8]}; spool {_span(spool)} in {len(streams)} "
                f"stream(s), {'each sequence once, no hole' if consecutive else 'NOT consecutive'}; "
                f"the subscriber got {_span(live)} after the restart")
    passed = (isinstance(last.get("stream"), str) and first_new.get("stream") == last["stream"]
              and first_new["sequence"] == last["sequence"] + 1 and len(streams) == 1 and consecutive
              and live_ok)
    return [*rows, Row("sequence after a SIGKILL", expected, observed, passed)]


def case_slow_subscriber(rig: Rig) -> list[Row]:
    """A subscriber frozen (SIGSTOP) while another reads: the publisher must not wait for it."""
    clip = rig.clip_daemon()
    daemon = clip.daemon
    frozen = rig.subscriber(clip.endpoint)
    time.sleep(1.0)  # connected and subscribed
    frozen.process.send_signal(signal.SIGSTOP)
    healthy = rig.subscriber(clip.endpoint)
    rss_before = daemon.rss_mb()
    got = healthy.wait_events(3)
    rss_after = daemon.rss_mb()
    frozen.process.send_signal(signal.SIGCONT)
    frozen.stop()
    observed = (f"reading subscriber got {len(healthy.sequences())} events while the other was frozen; "
                f"daemon RSS {rss_before:.0f} -> {rss_after:.0f} MB")
    return [Row("slow (frozen) subscriber", "the publisher does not wait for it: the others keep "
                "receiving", observed, got and daemon.alive)]


def _keygen(folder: Path, name: str) -> None:
    """`anprd keygen FOLDER --name NAME`; RuntimeError if it fails."""
    result = subprocess.run([sys.executable, "-m", "anprd.cli", "keygen", str(folder), "--name", name],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=STEP_DEADLINE_S * 2)
    if result.returncode != 0:
        raise RuntimeError(f"anprd keygen {name}: exit {result.returncode}: {result.stderr.strip()}")


def case_unauthenticated_subscriber(rig: Rig) -> list[Row]:
    """A daemon with CURVE on (publisher and catch-up): subscribers without a key and with a key it
    does not list get nothing, live or by catch-up; the subscriber whose key it lists gets every
    event, live and by catch-up. The subscribers start before the daemon, so they are there for
    its first event."""
    name = "unauthenticated subscriber under CURVE"
    expected = ("no key, or a key not listed: nothing, live or by catch-up; the listed key: every "
                "event, live and by catch-up (= the spool)")
    keys = rig.workdir / "keys"
    for key in ("daemon", "client", "stranger"):
        _keygen(keys, key)
    spool = rig.workdir / "curve" / "events.jsonl"
    spool.parent.mkdir(exist_ok=True)
    catchup = f"tcp://127.0.0.1:{free_port()}"
    config, endpoint = rig.config("curve", rig.clip_camera(), spool, catchup_endpoint=catchup,
                                  curve_secret_key=str(keys / "daemon.key_secret"),
                                  curve_clients=[str(keys / "client.key")])

    def curve(client: str) -> list[str]:
        return ["--curve-server-key", str(keys / "daemon.key"),
                "--curve-client-key", str(keys / f"{client}.key_secret")]

    allowed = rig.subscriber(endpoint, *curve("client"), log="curve-allowed.log")
    no_key = rig.subscriber(endpoint, log="curve-no-key.log")
    stranger = rig.subscriber(endpoint, *curve("stranger"), log="curve-stranger.log")
    daemon = Daemon(config)
    rig._processes.append(daemon)
    try:
        daemon.start()
    except RuntimeError as exc:
        return [Row(name, expected, f"the CURVE daemon did not start: {exc}", False)]
    assert daemon.log is not None
    got = allowed.wait_events(3)

    def subscribe(*options: str) -> subprocess.CompletedProcess[str]:
        # --timeout bounds it if the catch-up answer never ends; the reply comes at once or never
        return subprocess.run([sys.executable, "-m", "anprd.cli", "subscribe", endpoint, "--catchup",
                               catchup, "--since", "0", "--timeout", "60", *options], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=STEP_DEADLINE_S * 4)

    refused_catchup = subscribe("--max-events", "1")
    at_catchup = spooled(spool)
    caught_up = subscribe("--max-events", str(max(1, len(at_catchup))), *curve("client"))
    caught = [event for event in map(_event, caught_up.stdout.splitlines()) if event is not None]
    daemon.stop()  # the spool is final now; the allowed subscriber gets the last events
    events = spooled(spool)
    if events:
        allowed.events.wait_for(lambda e: e is not None and e.get("sequence") == events[-1]["sequence"],
                                0, STEP_DEADLINE_S)
    for subscriber in (allowed, no_key, stranger):
        subscriber.kill()
    refusals = daemon.log.count(lambda r: "refused" in _message(r) and "CURVE" in _message(r))
    live = allowed.received()
    observed = (f"listed key: {_span(live)} live, {_span(caught)} by catch-up, spool {_span(events)}"
                f"{'' if live == events and caught == at_catchup else ' (DIFFERENT)'}; no key: "
                f"{len(no_key.received())} live, catch-up exit {refused_catchup.returncode} "
                f"{len(refused_catchup.stdout.splitlines())} lines; key not listed: "
                f"{len(stranger.received())} live; daemon logged {refusals} refusal line(s)")
    passed = (got and bool(events) and live == events and caught_up.returncode == 0
              and caught == at_catchup and not no_key.received() and not stranger.received()
              and refused_catchup.returncode == 2 and not refused_catchup.stdout)
    return [Row(name, expected, observed, passed)]


# 2.2 s of the bundled clip, its frames 30-84: its first two plates in view (truth frames 26-80
# and 50-102), so two events per daemon, and few frames to infer on shared cores.
FAN_IN_FRAMES = range(30, 85)


def _short_clip(path: Path, frames: range = FAN_IN_FRAMES) -> Path:
    """The bundled clip's `frames` as a video of its own: a daemon replaying it at ``fast`` pace
    publishes a few events and ends by itself, so its spool is final."""
    source = cv2.VideoCapture(str(CLIP))
    size = (int(source.get(cv2.CAP_PROP_FRAME_WIDTH)), int(source.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), source.get(cv2.CAP_PROP_FPS),
                             size)
    try:
        for index in range(frames.stop):  # read from the start: seeking in mp4v is not exact
            ok, frame = source.read()
            if not ok:
                raise RuntimeError(f"{CLIP}: fewer than {frames.stop} frames")
            if index in frames:
                writer.write(frame)
    finally:
        writer.release()
        source.release()
    return path


class Proxy:
    """``anprd proxy`` with both sides on free loopback ports; `frontend` and `backend` are the
    endpoints from the line it prints once bound. RuntimeError if it prints none."""

    def __init__(self, log: Path, *options: str) -> None:
        with log.open("ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "anprd.cli", "proxy", "--frontend", "tcp://127.0.0.1:*",
                 "--backend", "tcp://127.0.0.1:*", *options], cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        try:
            line = first_line_out(self.process, "anprd proxy", log)
        except RuntimeError:
            self.stop()
            raise
        endpoints = json.loads(line)
        self.frontend: str = endpoints["frontend"]
        self.backend: str = endpoints["backend"]

    def stop(self) -> int | None:
        """SIGTERM; its exit status."""
        status = stop_process(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return status


def case_proxy_fan_in(rig: Rig) -> list[Row]:
    """Two daemons (``publisher.mode: connect``, distinct cameras) behind ``anprd proxy``, CURVE on
    both of its sides, each replaying a short clip to its end: the subscriber whose key the proxy
    lists gets every event of both daemons, each daemon's stream numbered 1..n with no hole and
    equal to its spool; subscribers without a key, or with a key not listed, get nothing. The
    subscribers start before the daemons, so they are there for the first event."""
    name = "fan-in: two daemons behind anprd proxy (CURVE both sides), one subscriber"
    expected = ("the listed subscriber gets both cameras' events: each daemon's stream 1..n, no hole, "
                "= its spool; the proxy exits 0 on SIGTERM")
    denied_name = "fan-in: subscribers of the proxy without a key, or with a key not listed"
    denied_expected = "nothing"
    keys = rig.workdir / "proxy-keys"
    for key in ("proxy", "gate", "yard", "viewer", "stranger"):
        _keygen(keys, key)
    proxy = Proxy(rig.workdir / "proxy.log", "--curve-secret-key", str(keys / "proxy.key_secret"),
                  "--frontend-clients", str(keys / "gate.key"), str(keys / "yard.key"),
                  "--backend-clients", str(keys / "viewer.key"))
    rig._processes.append(proxy)

    def curve(client: str) -> list[str]:
        return ["--curve-server-key", str(keys / "proxy.key"),
                "--curve-client-key", str(keys / f"{client}.key_secret")]

    viewer = rig.subscriber(proxy.backend, *curve("viewer"), log="proxy-viewer.log")
    no_key = rig.subscriber(proxy.backend, log="proxy-no-key.log")
    stranger = rig.subscriber(proxy.backend, *curve("stranger"), log="proxy-stranger.log")
    clip = _short_clip(rig.workdir / "fan-in.mp4")
    (rig.workdir / "fan-in").mkdir(exist_ok=True)
    daemons: dict[str, tuple[Daemon, Path]] = {}
    for camera in ("gate", "yard"):
        spool = rig.workdir / "fan-in" / f"{camera}.jsonl"
        config, _ = rig.config(
            f"fan-in-{camera}", {"id": camera, "url": str(clip), "replay_pace": "fast"}, spool,
            endpoint=proxy.frontend, mode="connect", spool_fsync=False,
            curve_secret_key=str(keys / f"{camera}.key_secret"),
            curve_server_key=str(keys / "proxy.key"))
        daemon = Daemon(config)
        rig._processes.append(daemon)
        try:
            daemon.start()
        except RuntimeError as exc:
            return [Row(name, expected, f"daemon {camera} did not start: {exc}", False),
                    Row(denied_name, denied_expected, "not checked", False)]
        daemons[camera] = (daemon, spool)
    exits: dict[str, int | None] = {}
    for camera, (daemon, _) in daemons.items():
        assert daemon.process is not None
        try:  # the clip's end ends the daemon; it flushes its events to the proxy first
            exits[camera] = daemon.process.wait(timeout=EVENT_DEADLINE_S)
        except subprocess.TimeoutExpired:
            exits[camera] = None
    spools = {camera: spooled(spool) for camera, (_, spool) in daemons.items()}
    total = sum(map(len, spools.values()))
    if total:  # the last one printed, or the deadline
        viewer.events.wait_for(lambda event: True, total - 1, STEP_DEADLINE_S)
    for subscriber in (viewer, no_key, stranger):
        subscriber.kill()
    proxy_exit = proxy.stop()
    received = viewer.received()
    checks, parts = [], []
    for camera, events in spools.items():
        stream = events[0].get("stream") if events else None
        got = [event for event in received if event.get("stream") == stream]
        numbered = [event.get("sequence") for event in events] == list(range(1, len(events) + 1))
        ok = (bool(events) and numbered and isinstance(stream, str) and got == events
              and all(event.get("camera_id") == camera for event in events) and exits[camera] == 0)
        checks.append(ok)
        parts.append(f"{camera}: exit {exits[camera]}, spool {_span(events)}"
                     f"{'' if numbered else ' NOT 1..n'}, subscriber {_span(got)} of its stream"
                     f"{'' if got == events else ' (DIFFERENT)'}")
    streams = {events[0].get("stream") for events in spools.values() if events}
    observed = "; ".join(parts) + (f"; {len(received)} events in all, {len(streams)} streams; "
                                   f"proxy exit {proxy_exit}")
    passed = (all(checks) and len(streams) == len(spools) and len(received) == total
              and proxy_exit == 0)
    denied = (f"no key: {len(no_key.received())} events; key not listed: "
              f"{len(stranger.received())} events (while the listed one got {len(received)})")
    return [Row(name, expected, observed, passed),
            Row(denied_name, denied_expected, denied,
                bool(received) and not no_key.received() and not stranger.received())]


def case_spool_full(rig: Rig) -> list[Row]:
    """The spool's file system full: the daemon runs with RLIMIT_FSIZE (its files stop at 2 KiB,
    writes past it fail with EFBIG as on a full disk; no root needed, unlike a tmpfs or loop file)."""
    limit = 2048
    spool = rig.workdir / "full" / "events.jsonl"
    spool.parent.mkdir(exist_ok=True)
    config, endpoint = rig.config("full", rig.clip_camera(), spool)
    daemon = Daemon(config, fsize_limit=limit)
    rig._processes.append(daemon)
    try:
        daemon.start()
    except RuntimeError as exc:
        return [Row("spool's disk full", "keeps running", f"did not start: {exc}", False)]
    assert daemon.log is not None
    refused = daemon.log.wait_for(lambda r: "not published" in _message(r), 0, EVENT_DEADLINE_S * 2)
    time.sleep(1.0)
    data = spool.read_bytes() if spool.exists() else b""
    whole = data.endswith(b"\n") or not data
    count = data.count(b"\n")
    observed = (f"{count} events spooled ({len(data)} bytes, "
                f"{'whole lines' if whole else 'a cut line'}); "
                + (f"then refused: \"{_message(refused[1])[:60]}\"" if refused else "no refusal logged")
                + f"; daemon {'running' if daemon.alive else 'exited'}")
    alive = daemon.alive
    daemon.stop()
    return [Row("spool's disk full (2 KiB file size limit)",
                "events past it are logged as not published; no half line; the daemon keeps running",
                observed, refused is not None and whole and len(data) <= limit and alive)]


def _bad_inputs(workdir: Path) -> list[tuple[str, list[str], str]]:
    """(name, argv after `anprd`, text the one line must contain)."""
    def config(name: str, text: str) -> str:
        path = workdir / f"bad-{name}.yaml"
        path.write_text(text)
        return str(path)

    camera = "cameras: [{id: a, url: rtsp://127.0.0.1:9/x}]\n"
    return [
        ("config: unknown key", ["run", "--config", config("key", camera + "publisher: {endpont: x}\n")],
         "publisher.endpont"),
        ("config: queue_size 0", ["run", "--config", config(
            "queue", "cameras: [{id: a, url: rtsp://127.0.0.1:9/x, queue_size: 0}]\n")],
         "cameras.0.queue_size"),
        ("config: port 70000", ["run", "--config", config(
            "port", camera + "publisher: {endpoint: 'tcp://127.0.0.1:70000'}\n")], "70000"),
        ("config: .nan", ["run", "--config", config(
            "nan", "cameras: [{id: a, url: rtsp://127.0.0.1:9/x, read_timeout_s: .nan}]\n")],
         "read_timeout_s"),
        ("config: not YAML", ["run", "--config", config("yaml", "cameras: [\n")], "bad-yaml.yaml"),
        ("config: missing file", ["run", "--config", str(workdir / "none.yaml")], "none.yaml"),
        ("config: CURVE key not a key", ["run", "--config", config(
            "curve", camera + f"publisher: {{curve_secret_key: {config('notakey', 'x: 1')}}}\n")],
         "publisher.curve_secret_key"),
        ("subscribe: bad port", ["subscribe", "tcp://127.0.0.1:70000"], "70000"),
        ("subscribe: missing CURVE key", ["subscribe", "tcp://127.0.0.1:5555", "--curve-server-key",
                                          str(workdir / "none.key"), "--curve-client-key",
                                          str(workdir / "none.key_secret")], "none.key"),
        ("bridge mqtt: bad broker", ["bridge", "mqtt", "--broker", "host:0"], "--broker"),
        ("bridge mqtt: half of CURVE", ["bridge", "mqtt", "--broker", "127.0.0.1:1",
                                        "--curve-server-key", str(workdir / "none.key")],
         "--curve-client-key"),
    ]


def case_bad_inputs(rig: Rig) -> list[Row]:
    """Bad configs and options: exit 2, one line on stderr naming the culprit, no traceback."""
    limit = rig.limits.bad_config_cpu_s if rig.limits else None
    rows = []
    for name, argv, needle in _bad_inputs(rig.workdir):
        started, cpu_before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
        result = subprocess.run([sys.executable, "-m", "anprd.cli", *argv], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=STEP_DEADLINE_S * 4)
        took = time.monotonic() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        lines = result.stderr.splitlines()
        one_line = len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr
        timed = argv[0] != "run" or _within(cpu, limit)
        observed = f"exit {result.returncode} in {took:.2f} s ({cpu:.2f} s CPU): " + (
            lines[0][:90] if one_line else f"{len(lines)} lines: {result.stderr[-200:]!r}")
        expected = f"exit 2, one line naming {needle!r}" + (
            f", within {limit:g} s CPU" if limit and argv[0] == "run" else "")
        rows.append(Row(f"bad input: {name}", expected, observed,
                        result.returncode == 2 and one_line and timed))
    return rows


# In the order they run; `daemon_sigkill` gives two rows (the restart, and the sequence after it).
CASES: dict[str, Callable[[Rig], list[Row]]] = {
    "rtsp_kill_restart": case_rtsp_kill_restart,
    "rtsp_hang": case_rtsp_hang,
    "subscriber_restart": case_subscriber_restart,
    "slow_subscriber": case_slow_subscriber,
    "daemon_sigkill": case_daemon_sigkill,
    "unauthenticated_subscriber": case_unauthenticated_subscriber,
    "proxy_fan_in": case_proxy_fan_in,
    "spool_full": case_spool_full,
    "bad_inputs": case_bad_inputs,
}


def run_cases(names: list[str], workdir: Path, limits: Limits | None, cycles: int = 20,
              budget_s: float = 600.0, report: Callable[[Row], None] | None = None) -> list[Row]:
    """Run the named cases in order; a case that raises, or is left when the budget is spent,
    fails with the reason as its observation."""
    rig = Rig(workdir, limits, cycles)
    deadline = time.monotonic() + budget_s
    rows: list[Row] = []
    try:
        for name in names:
            if time.monotonic() > deadline:
                new = [Row(name, "runs", f"not run: the {budget_s:.0f} s budget was spent", False)]
            else:
                try:
                    new = CASES[name](rig)
                except Exception as exc:  # a case's own failure is a failed row, not a crash
                    new = [Row(name, "runs", f"raised {type(exc).__name__}: {exc}", False)]
            for row in new:
                rows.append(row)
                if report is not None:
                    report(row)
    finally:
        rig.close()
    return rows


def _print_row(row: Row) -> None:
    print(f"| {row.case} | {row.expected} | {row.observed} | {'pass' if row.passed else 'FAIL'} |",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20, help="RTSP kill/restart cycles")
    parser.add_argument("--only", help=f"comma-separated cases of: {', '.join(CASES)}")
    parser.add_argument("--no-limits", action="store_true", help="functional checks only, no time limits")
    parser.add_argument("--budget-s", type=float, default=600.0, help="stop starting cases after this")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(CASES)
    unknown = [name for name in names if name not in CASES]
    if unknown:
        print(f"faults.py: --only: unknown case {unknown[0]!r} (cases: {', '.join(CASES)})", file=sys.stderr)
        return 2
    if not Path(SYSTEM_PYTHON).is_file() or not CLIP.is_file():
        print(f"faults.py: needs {SYSTEM_PYTHON} with GStreamer and {CLIP}: run `make setup`",
              file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="anprd-faults-"))
    print("| case | expected | observed | result |\n|---|---|---|---|", flush=True)
    started = time.monotonic()
    try:
        rows = run_cases(names, workdir, None if args.no_limits else Limits(), args.cycles,
                         args.budget_s, _print_row)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    failed = sum(not row.passed for row in rows)
    print(f"\n{len(rows) - failed}/{len(rows)} passed in {time.monotonic() - started:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
