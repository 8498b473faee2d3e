"""``anprd run`` as a real subprocess: sd_notify, ZeroMQ events, SIGTERM drain, SIGHUP reload,
watchdog on a stalled RTSP camera, metrics over HTTP, and live RTSP against file replay.

Each test starts the daemon on a rendered clip with the committed model, a real ZeroMQ subscriber
on a free loopback port and a fake ``NOTIFY_SOCKET`` (an AF_UNIX datagram socket in tmp_path).
Waits have generous deadlines (the machine may be shared with a training job); nothing asserts
how long anything took.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import cv2
import jsonschema
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from anprd.config.detector import DetectorConfig
from anprd.ctc import normalise_plate
from anprd.subscriber import EventSubscriber

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / DetectorConfig().model  # the shipped default model
SCHEMA_PATH = REPO / "schema" / "plate_event.schema.json"
CLIP_FRAMES = 100  # --seconds 4 at 25 fps
START_DEADLINE_S = 120.0  # TensorFlow import and model load on a busy 2-core machine
EVENT_DEADLINE_S = 90.0
EXIT_DEADLINE_S = 60.0
WATCHDOG_USEC = 1_000_000  # systemd's WatchdogSec=1s: the daemon pings every 0.5 s


# --- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def sample_video(clip: tuple[Path, Path]) -> Path:
    """Overrides conftest's video: the RTSP test servers here stream the plate clip."""
    return clip[0]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Notifications:
    """The fake systemd side of NOTIFY_SOCKET: collects every datagram in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self.messages: list[tuple[float, dict[str, str]]] = []  # (monotonic time, fields)

    def poll(self, timeout_s: float) -> None:
        """Receive what arrives within ``timeout_s`` (at least one wait)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._socket.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self._socket.recv(65536)
            except TimeoutError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))
            if time.monotonic() >= deadline:
                return

    def keys(self) -> list[str]:
        """The notification kinds in order (STATUS lines left out)."""
        return [key for _, fields in self.messages for key in fields if key in
                ("READY", "WATCHDOG", "STOPPING", "RELOADING")]

    def wait_for(self, key: str, deadline_s: float, after: int = 0) -> int:
        """Index in ``messages`` of the first ``key`` message at or after index ``after``."""
        deadline = time.monotonic() + deadline_s
        while True:
            for index in range(after, len(self.messages)):
                if key in self.messages[index][1]:
                    return index
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {key}= notification within {deadline_s} s: {self.keys()}")
            self.poll(0.5)

    def close(self) -> None:
        self._socket.close()


class DaemonRun:
    """``anprd run --config`` as a subprocess, with its notifications, events and metrics."""

    def __init__(self, tmp_path: Path, cameras: list[dict[str, Any]], **sections: dict[str, Any]) -> None:
        self.tmp_path = tmp_path
        self.config_path = tmp_path / "config.yaml"
        self.spool = tmp_path / "spool.jsonl"
        self.endpoint = f"tcp://127.0.0.1:{_free_port()}"
        self.metrics_port = _free_port()
        self.config: dict[str, Any] = {
            "cameras": cameras,
            "detector": {"model": str(MODEL)},
            "publisher": {"endpoint": self.endpoint, "spool_path": str(self.spool), "spool_fsync": False},
            "metrics": {"port": self.metrics_port},
            "notify": {"stall_timeout_s": 2.0, "status_interval_s": 1.0, "drain_timeout_s": 20.0},
        }
        for name, values in sections.items():
            self.config.setdefault(name, {}).update(values)
        self.write_config(self.config)
        self.notifications = Notifications(tmp_path / "notify.sock")
        # Connected before the daemon binds: ZeroMQ retries, so no event is lost to a late join.
        self.subscriber = EventSubscriber(self.endpoint)
        self.events: list[dict[str, Any]] = []
        self.stderr_path = tmp_path / "daemon.stderr"
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr_copier: threading.Thread | None = None

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(config))

    def start(self) -> None:
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(self.notifications.path),
            "WATCHDOG_USEC": str(WATCHDOG_USEC),
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        env.pop("WATCHDOG_PID", None)
        # The log goes through a pipe, copied to a file here: no file of the daemon's own but its
        # spool grows (see the full-disk test).
        self.process = subprocess.Popen(
            [sys.executable, "-m", "anprd.cli", "run", "--config", str(self.config_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO, env=env,
        )
        self._stderr_copier = threading.Thread(target=self._copy_stderr, args=(self.process.stderr,),
                                               daemon=True)
        self._stderr_copier.start()

    def _copy_stderr(self, pipe: IO[bytes]) -> None:
        with pipe, self.stderr_path.open("ab") as log:
            while chunk := os.read(pipe.fileno(), 65536):
                log.write(chunk)
                log.flush()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def wait_stderr(self, text: str, deadline_s: float) -> None:
        """Wait until the log holds `text`, reading events and notifications meanwhile."""
        deadline = time.monotonic() + deadline_s
        while text not in self.stderr:
            assert time.monotonic() < deadline, f"no {text!r} in the log; stderr: {self.stderr[-3000:]}"
            self.collect(0.3)

    def signal(self, signum: int) -> None:
        assert self.process is not None and self.process.poll() is None, self.stderr[-3000:]
        self.process.send_signal(signum)

    def wait_ready(self) -> None:
        try:
            self.notifications.wait_for("READY", START_DEADLINE_S)
        except AssertionError:
            raise AssertionError(f"daemon not READY; stderr: {self.stderr[-3000:]}") from None

    def collect(self, seconds: float) -> list[dict[str, Any]]:
        """Events received within ``seconds`` (notifications are read meanwhile)."""
        received: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            event = self.subscriber.recv(min(0.2, remaining))
            if event is not None:
                received.append(event)
            self.notifications.poll(0.01)
        self.events += received
        return received

    def wait_for_event(self, deadline_s: float = EVENT_DEADLINE_S) -> dict[str, Any]:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            received = self.collect(0.5)
            if received:
                return received[0]
        raise AssertionError(f"no event within {deadline_s} s; stderr: {self.stderr[-3000:]}")

    def wait_exit(self) -> int:
        """Wait for the process to end, reading events and notifications meanwhile."""
        assert self.process is not None
        deadline = time.monotonic() + EXIT_DEADLINE_S
        while self.process.poll() is None:
            assert time.monotonic() < deadline, f"daemon still running; stderr: {self.stderr[-3000:]}"
            self.collect(0.3)
        self.collect(1.0)  # the publisher lingers to deliver the last events
        if self._stderr_copier is not None:
            self._stderr_copier.join(10)  # the log's last lines
        return self.process.returncode

    def metrics(self) -> dict[str, float]:
        """``name{camera=...}`` -> value from /metrics, scraped over HTTP."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                camera = sample.labels.get("camera")
                values[f"{sample.name}{{{camera}}}" if camera else sample.name] = sample.value
        return values

    def wait_metric(self, name: str, predicate: Callable[[float], bool], deadline_s: float) -> float:
        deadline = time.monotonic() + deadline_s
        while True:
            value = self.metrics().get(name)
            if value is not None and predicate(value):
                return value
            assert time.monotonic() < deadline, f"{name} stayed at {value}; stderr: {self.stderr[-3000:]}"
            self.collect(0.5)

    def spooled(self) -> list[dict[str, Any]]:
        if not self.spool.exists():
            return []
        return [json.loads(line) for line in self.spool.read_text().splitlines()]

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        if self._stderr_copier is not None:
            self._stderr_copier.join(10)
        self.subscriber.stop()
        self.notifications.close()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonRun]]:
    runs: list[DaemonRun] = []

    def make(cameras: list[dict[str, Any]], **sections: dict[str, Any]) -> DaemonRun:
        run = DaemonRun(tmp_path, cameras, **sections)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.close()


def _file_camera(video: Path, **options: Any) -> dict[str, Any]:
    return {"id": "gate", "url": str(video), "replay_pace": "realtime", **options}


# --- start-up errors ---------------------------------------------------------------------------


def _run_cli(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "anprd.cli", "run", "--config", str(config)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_invalid_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("cameras:\n  - id: gate\n    url: x.mp4\ndetector:\n  presence_threshold: 2\n")
    result = _run_cli(config)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "detector.presence_threshold" in result.stderr


def test_missing_model_is_one_line_and_exit_2(tmp_path: Path, clip: tuple[Path, Path]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "cameras": [_file_camera(clip[0])],
        "detector": {"model": str(tmp_path / "no-model")},
        "metrics": {"port": 0},
        "publisher": {"endpoint": f"tcp://127.0.0.1:{_free_port()}"},
    }))
    result = _run_cli(config)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("anprd run:")]
    assert len(errors) == 1 and "model not found" in errors[0]


# --- a whole run -------------------------------------------------------------------------------


def test_run_notifies_serves_metrics_survives_a_bad_reload_and_exits_at_the_end_of_the_clip(
    daemon_factory: Callable[..., DaemonRun], clip: tuple[Path, Path], validator
) -> None:
    run = daemon_factory([_file_camera(clip[0], event_crop=True)])
    run.start()
    run.wait_ready()

    metrics = run.metrics()
    assert "anprd_frames_read_total{gate}" in metrics
    run.wait_metric("anprd_frames_read_total{gate}", lambda v: v > 0, 30)
    with urllib.request.urlopen(f"http://127.0.0.1:{run.metrics_port}/ready", timeout=10) as response:
        assert response.status == 200

    # An invalid edit on SIGHUP: logged, and the running config goes on.
    bad = dict(run.config, detector={"model": str(MODEL), "presence_threshold": 2})
    run.write_config(bad)
    run.signal(signal.SIGHUP)

    assert run.wait_exit() == 0, run.stderr[-3000:]
    keys = run.notifications.keys()
    assert keys.index("READY") < keys.index("WATCHDOG") < keys.index("STOPPING"), keys
    assert "RELOADING" not in keys
    assert keys.count("READY") == 1
    failed_reload = [line for line in run.stderr.splitlines() if "config reload failed" in line]
    assert len(failed_reload) == 1 and "detector.presence_threshold" in failed_reload[0]

    # Every event reached the subscriber, in order, and is a valid plate event.
    assert run.events, f"no event for a clip with a passing car; stderr: {run.stderr[-3000:]}"
    assert [e["event_id"] for e in run.events] == [e["event_id"] for e in run.spooled()]
    for event in run.events:
        validator.validate(event)
        assert event["camera_id"] == "gate"
        crop = cv2.imdecode(np.frombuffer(base64.b64decode(event["crop_jpeg"]), np.uint8), cv2.IMREAD_COLOR)
        assert crop is not None and crop.shape[0] >= 8 and crop.shape[1] > crop.shape[0]  # a plate: wide
    # log_plates is off: each event is logged with a salted hash in place of the plate.
    plate_lines = [line for line in run.stderr.splitlines() if "camera gate: plate " in line]
    assert len(plate_lines) == len(run.events)
    assert all("camera gate: plate plate#" in line for line in plate_lines), plate_lines


def test_sigterm_drains_and_the_final_event_reaches_the_subscriber(
    daemon_factory: Callable[..., DaemonRun], clip: tuple[Path, Path]
) -> None:
    # Tracks never end by themselves here, so every event must come from the shutdown flush; and
    # every track is confirmed at once, so a live track is one the flush must report.
    run = daemon_factory(
        [_file_camera(clip[0], loop=True)],
        tracker={"min_frames": 1, "max_misses": 1_000_000, "max_gap_s": 3600, "max_age_s": 3600},
    )
    run.start()
    run.wait_ready()
    # A whole pass of the clip (the car has been seen), with a live track.
    run.wait_metric("anprd_frames_read_total{gate}", lambda v: v >= CLIP_FRAMES, 90)
    run.wait_metric("anprd_active_tracks{gate}", lambda v: v >= 1, 60)
    assert run.collect(0.5) == []

    run.signal(signal.SIGTERM)
    assert run.wait_exit() == 0, run.stderr[-3000:]
    keys = run.notifications.keys()
    assert keys[-1] == "STOPPING" and keys.count("STOPPING") == 1, keys
    assert run.events, f"the drain published nothing; stderr: {run.stderr[-3000:]}"
    assert [e["event_id"] for e in run.events] == [e["event_id"] for e in run.spooled()]
    assert all(not e["provisional"] for e in run.events)


def test_sighup_applies_a_new_threshold(
    daemon_factory: Callable[..., DaemonRun], clip: tuple[Path, Path]
) -> None:
    # The clip loops, every frame processed (fast pace, frames numbered across loops), and each
    # passage of its cars is an event of its own (same_plate_window_s 0): with the starting
    # threshold every loop gives events. After the reload no reading reaches min_confidence 1.0,
    # so no event may hold a frame read after it.
    run = daemon_factory([_file_camera(clip[0], loop=True, replay_pace="fast")],
                         tracker={"same_plate_window_s": 0})
    run.start()
    run.wait_ready()
    # The clip's cars pass in its frames 28-70 and 53-97 (its truth file): by frame 60 both are
    # tracked with the starting config.
    run.wait_metric("anprd_frames_processed_total{gate}", lambda v: v >= 60, EVENT_DEADLINE_S)

    stricter = dict(run.config, detector={"model": str(MODEL), "min_confidence": 1.0})
    run.write_config(stricter)
    reload_from = len(run.notifications.messages)
    run.signal(signal.SIGHUP)
    reloading = run.notifications.wait_for("RELOADING", 30, after=reload_from)
    run.notifications.wait_for("READY", 30, after=reloading)
    # Frames the old threshold saw were read before READY; the metric is synced once a second, so
    # its first new value after READY was taken after it, and counts every such frame.
    before = run.metrics()["anprd_frames_read_total{gate}"]
    reloaded_at = run.wait_metric("anprd_frames_read_total{gate}", lambda v: v > before, 60)
    # A whole loop after it: every car passes in view again.
    run.wait_metric("anprd_frames_processed_total{gate}", lambda v: v >= reloaded_at + CLIP_FRAMES,
                    EVENT_DEADLINE_S * 2)
    run.signal(signal.SIGTERM)
    assert run.wait_exit() == 0, run.stderr[-3000:]
    assert "config reloaded" in run.stderr
    late = [(e["plate"], e["first_frame"], e["last_frame"]) for e in run.events
            if e["last_frame"] >= reloaded_at]
    assert late == [], f"events from frames read after the reload (at frame {reloaded_at:.0f}): {late}"
    assert run.events, "the cars seen before the reload were not reported"


def test_an_event_the_spool_cannot_take_is_not_sent_is_logged_and_leaves_a_gap(
    daemon_factory: Callable[..., DaemonRun], clip: tuple[Path, Path]
) -> None:
    run = daemon_factory([_file_camera(clip[0], loop=True, replay_pace="fast")],
                         tracker={"same_plate_window_s": 0})  # every loop gives events
    run.start()
    run.wait_ready()  # and no event yet: the clip's first car leaves the view at its frame 70
    # The disk fills up: no file of the daemon's may grow past the spool's size (its log is a pipe).
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.prlimit(run.process.pid, resource.RLIMIT_FSIZE, (run.spool.stat().st_size, hard))
    run.wait_stderr(" not published: ", EVENT_DEADLINE_S)
    resource.prlimit(run.process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))  # room again

    def lost() -> list[str]:
        return re.findall(r"event (\S+) not published: cannot write event spool \S+: \[Errno 27\] File too "
                          r"large", run.stderr)

    def gap() -> set[int]:
        sequences = {event["sequence"] for event in run.events}
        return set(range(1, max(sequences, default=0) + 1)) - sequences

    deadline = time.monotonic() + EVENT_DEADLINE_S
    # until an event sent after the one lost shows the loss by its sequence number (or one lost
    # has been sent after all)
    while not gap() and not set(lost()) & {event["event_id"] for event in run.events}:
        assert time.monotonic() < deadline, f"no event after the full disk; stderr: {run.stderr[-3000:]}"
        run.collect(0.5)
    run.signal(signal.SIGTERM)
    assert run.wait_exit() == 0, run.stderr[-3000:]

    sent, spooled = [e["event_id"] for e in run.events], [e["event_id"] for e in run.spooled()]
    assert lost() and not set(lost()) & (set(sent) | set(spooled)), (lost(), sent)  # logged, not sent
    assert sent == spooled  # everything sent is in the spool, in order
    sequences = [e["sequence"] for e in run.events]
    assert sequences == sorted(sequences) and len(gap()) == len(lost()), (sequences, lost())


class _FailingDetector:
    """Stands in for a broken detector (no real input makes every frame fail): raises on every call
    but those in `succeed_on` (1-based), which the real detector answers; asks the daemon to stop
    after `stop_after` calls, should it never give up."""

    def __init__(self, real: Any, succeed_on: set[int], daemon: Any, stop_after: int) -> None:
        self.real, self.succeed_on, self.daemon, self.stop_after = real, succeed_on, daemon, stop_after
        self.calls = 0

    def detect(self, image: np.ndarray) -> list:
        self.calls += 1
        if self.calls == self.stop_after:
            self.daemon.request_stop()
        if self.calls in self.succeed_on:
            return self.real.detect(image)
        raise RuntimeError(f"broken detector (call {self.calls})")


def test_frames_that_fail_100_times_in_a_row_stop_the_worker(
    tmp_path: Path, clip: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    from anprd.config import load_config
    from anprd.daemon import Daemon
    from anprd.metrics import Metrics
    from anprd.notify import Notifier

    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "cameras": [_file_camera(clip[0], loop=True, replay_pace="fast")],
        "detector": {"model": str(MODEL)},
        "publisher": {"endpoint": f"tcp://127.0.0.1:{_free_port()}"},
        "metrics": {"enabled": False},
    }))
    metrics = Metrics(process_metrics=False)
    daemon = Daemon(config_path, load_config(config_path), notifier=Notifier(""), metrics=metrics)
    try:
        daemon.start()
        # 99 failures, a frame that works, 99 more, one that works: the worker goes on. Then 100 in
        # a row: it stops at the 100th, and the daemon exits with status 1.
        failing = _FailingDetector(daemon._detector, {100, 200}, daemon, stop_after=1000)
        with daemon._worker_paused():
            (camera,) = daemon._cameras.values()
            camera.pipeline.detector = failing
        with caplog.at_level(logging.ERROR, logger="anprd.daemon"):
            status = daemon.run()
    finally:
        daemon.close()
    assert status == 1 and failing.calls == 300, (status, failing.calls)
    assert metrics.registry.get_sample_value("anprd_frames_failed_total", {"camera": "gate"}) == 298
    assert "inference worker failed" in [record.getMessage() for record in caplog.records]


def test_sighup_reopens_a_camera_whose_url_changed(
    daemon_factory: Callable[..., DaemonRun], clip: tuple[Path, Path], tmp_path: Path
) -> None:
    other = tmp_path / "other.avi"  # one second of an empty road: no plate
    writer = cv2.VideoWriter(str(other), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (320, 240))
    for index in range(25):
        writer.write(np.full((240, 320, 3), 90 + index, np.uint8))
    writer.release()

    run = daemon_factory([_file_camera(clip[0], loop=True)])
    run.start()
    run.wait_ready()
    reload_from = len(run.notifications.messages)
    run.write_config(dict(run.config, cameras=[_file_camera(other)]))
    run.signal(signal.SIGHUP)
    reloading = run.notifications.wait_for("RELOADING", 30, after=reload_from)
    run.notifications.wait_for("READY", 30, after=reloading)
    # The looping clip is gone; the new file plays once, and then the daemon ends by itself.
    assert run.wait_exit() == 0, run.stderr[-3000:]
    assert f"camera gate: opened {other}" in run.stderr
    assert "camera gate: source ended" in run.stderr
    assert [e["event_id"] for e in run.events] == [e["event_id"] for e in run.spooled()]


def test_watchdog_keeps_pinging_while_the_rtsp_camera_is_down_and_reconnecting(
    daemon_factory: Callable[..., DaemonRun], rtsp_server_factory
) -> None:
    # A camera outage is handled in the process; a watchdog restart would only lose its tracks.
    server = rtsp_server_factory()
    run = daemon_factory([{
        "id": "gate", "url": server.url, "open_timeout_s": 2.0, "read_timeout_s": 2.0,
        "reconnect_backoff_min_s": 0.5, "reconnect_backoff_max_s": 2.0,
    }])
    stall_timeout_s = run.config["notify"]["stall_timeout_s"]
    run.start()
    run.wait_ready()
    run.notifications.wait_for("WATCHDOG", 30)
    run.wait_metric("anprd_frames_processed_total{gate}", lambda v: v > 0, 60)

    server.pause()  # SIGSTOP: the connection stays open, no frame arrives
    run.wait_stderr("camera gate: reconnecting", 60)  # the read timed out: the camera is down
    down_from = len(run.notifications.messages)
    # Pings come at most every WATCHDOG_USEC / 2: three stall timeouts' worth of them, counted from
    # the moment the camera was down, lie well past the stall timeout, where a daemon that took
    # the outage for a stall would have stopped pinging.
    wanted = round(3 * stall_timeout_s / (WATCHDOG_USEC / 2e6))

    def pings_since_down() -> int:
        return sum("WATCHDOG" in fields for _, fields in run.notifications.messages[down_from:])

    deadline = time.monotonic() + 120  # a safety limit only: the loop ends when the pings are in
    while (pings := pings_since_down()) < wanted:
        assert time.monotonic() < deadline, f"{pings} of {wanted} pings; stderr: {run.stderr[-2000:]}"
        run.notifications.poll(0.5)
    assert "pipeline stalled" not in run.stderr.split("camera gate: reconnecting")[-1]
    # a car in view when the camera dropped has had its event: tracks end on time alone
    run.wait_metric("anprd_active_tracks{gate}", lambda v: v == 0, 60)

    processed = run.metrics()["anprd_frames_processed_total{gate}"]
    server.resume()
    run.wait_metric("anprd_frames_processed_total{gate}", lambda v: v > processed, 90)  # back
    run.signal(signal.SIGTERM)
    assert run.wait_exit() == 0, run.stderr[-3000:]
    assert run.notifications.keys()[-1] == "STOPPING"


def test_a_daemon_started_before_its_camera_is_ready_and_keeps_pinging(
    daemon_factory: Callable[..., DaemonRun]
) -> None:
    # A camera host that boots before its cameras: systemd must see the service start.
    url = f"rtsp://127.0.0.1:{_free_port()}/stream"  # nothing listens there
    run = daemon_factory([{
        "id": "gate", "url": url, "open_timeout_s": 1.0, "reconnect_backoff_min_s": 0.5,
        "reconnect_backoff_max_s": 1.0,
    }])
    run.start()
    run.wait_ready()
    assert "no camera reachable yet" in run.stderr
    first = run.notifications.wait_for("WATCHDOG", 30)
    run.notifications.wait_for("WATCHDOG", 30, after=first + 1)
    run.signal(signal.SIGTERM)
    assert run.wait_exit() == 0, run.stderr[-3000:]


def test_a_reload_that_changes_the_reader_loads_the_detector_again() -> None:
    from anprd.daemon import _detector_needs_load
    from anprd.detector import resolve_model_dir

    loaded = resolve_model_dir(DetectorConfig().model, REPO)
    old = DetectorConfig()
    assert _detector_needs_load(old, DetectorConfig(reader="window"), loaded, REPO)  # readers built at load
    assert _detector_needs_load(old, DetectorConfig(prefilter="none"), loaded, REPO)
    assert not _detector_needs_load(old, DetectorConfig(presence_threshold=0.9), loaded, REPO)  # retuned


def _top_plates(event: dict, count: int = 2) -> set[str]:
    return {normalise_plate(c["plate"]) for c in event["candidates"][:count]}


def test_live_rtsp_and_file_replay_read_the_same_plates(
    daemon_factory: Callable[..., DaemonRun], rtsp_server_factory, clip: tuple[Path, Path]
) -> None:
    # The live run sees other frames than the replay (newest frame wins, H.264 instead of the
    # file's codec), so where the model itself hesitates between two texts (O/0 in a font that
    # draws them alike) the two runs may choose differently. What must agree: the same vehicles,
    # each published text among the other run's top two candidates for that vehicle, and no
    # vehicle in one run that the other did not report.
    replay = subprocess.run(
        [sys.executable, "-m", "anprd.cli", "replay", str(clip[0]), "--json", "--model", str(MODEL)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert replay.returncode == 0, replay.stderr
    replayed = [json.loads(line) for line in replay.stdout.splitlines()[:-1]]
    assert replayed, "the replay read no plate"

    server = rtsp_server_factory(fps=25)  # the clip's own rate, looping
    # Each loop brings the same cars back within seconds, which the tracker would otherwise take
    # for one passage that goes on (same_plate_window_s) and report once.
    run = daemon_factory([{"id": "gate", "url": server.url}], tracker={"same_plate_window_s": 0})
    run.start()
    run.wait_ready()

    def same_vehicle(first: dict, second: dict) -> bool:
        return (normalise_plate(first["plate"]) in _top_plates(second)
                and normalise_plate(second["plate"]) in _top_plates(first))

    def summary() -> tuple[list[str], list[str]]:
        return [e["plate"] for e in replayed], [e["plate"] for e in live]

    # Frames are numbered as read from the stream (dropped ones too). A car already in view at the
    # first frame is seen only in part; a track that starts a whole loop of the clip later is a
    # passage seen whole. The shutdown's flushed (cut short) tracks are not counted either. More
    # than one loop may be needed while a busy machine (the server encodes on the same cores) has
    # not yet processed enough frames of a car to report it; a car may pass, and be reported, twice.
    live: list[dict] = []
    deadline = time.monotonic() + 300  # a safety limit only: the loop ends when every car is seen
    while not all(any(same_vehicle(event, other) for other in live) for event in replayed):
        assert time.monotonic() < deadline, summary()
        live += [event for event in run.collect(1.0) if event["first_frame"] >= CLIP_FRAMES]
        assert all(any(same_vehicle(event, other) for other in replayed) for event in live), summary()
    run.signal(signal.SIGTERM)
    assert run.wait_exit() == 0, run.stderr[-3000:]


# --- the bundled config and `make run` ---------------------------------------------------------


def test_bundled_config_replays_the_sample_clip_once() -> None:
    from anprd.config import ReplayPace, load_config

    config = load_config(REPO / "config.yaml")  # unknown or misspelt keys would fail here
    (camera,) = config.cameras
    assert camera.id == "sample" and Path(camera.url) == REPO / "samples" / "clip.mp4"
    assert camera.replay_pace is ReplayPace.REALTIME and not camera.loop  # `anprd run` ends with it
    assert config.publisher.endpoint == "tcp://127.0.0.1:5555"
    assert (config.metrics.address, config.metrics.port) == ("127.0.0.1", 9108)


def test_make_run_prints_the_events_and_exits_with_the_daemon_status(
    tmp_path: Path, clip: tuple[Path, Path], validator
) -> None:
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "cameras": [_file_camera(clip[0], replay_pace="fast")],
        "detector": {"model": str(MODEL)},
        "publisher": {"endpoint": endpoint},
        "metrics": {"port": 0},
    }))
    env = {**os.environ, "ANPRD": str(Path(sys.executable).parent / "anprd"), "CONFIG": str(config),
           "ENDPOINT": endpoint, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(["bash", str(REPO / "scripts" / "make_run.sh")], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events, f"no event printed; stderr: {result.stderr[-3000:]}"
    for event in events:
        validator.validate(event)
    assert "stopping (every source has ended)" in result.stderr

    config.write_text("cameras: []\n")  # the daemon's failure is the script's status
    result = subprocess.run(["bash", str(REPO / "scripts" / "make_run.sh")], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=120)
    assert result.returncode == 2 and "anprd run: " in result.stderr
