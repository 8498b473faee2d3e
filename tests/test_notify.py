"""sd_notify client and watchdog, against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from anprd import notify
from anprd.config.service import NotifyConfig
from anprd.notify import Notifier, Watchdog, format_status, watchdog_interval_s

REPO_ROOT = Path(__file__).resolve().parents[1]


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: one bound SOCK_DGRAM socket."""

    def __init__(self, address: str, sock: socket.socket) -> None:
        self.address = address  # what goes into NOTIFY_SOCKET
        self._sock = sock

    def receive(self, timeout_s: float = 5.0) -> dict[str, str]:
        self._sock.settimeout(timeout_s)
        data = self._sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def pending(self) -> int:
        """Datagrams waiting, read without blocking (and discarded)."""
        count = 0
        self._sock.setblocking(False)
        try:
            while True:
                self._sock.recv(4096)
                count += 1
        except BlockingIOError:
            return count


@pytest.fixture
def systemd_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    path = tmp_path / "notify.sock"
    assert len(str(path)) < 108, "AF_UNIX path too long for this tmp_path"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield FakeSystemd(str(path), sock)
    finally:
        sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[FakeSystemd]:
    name = f"anprd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        yield FakeSystemd("@" + name, sock)
    finally:
        sock.close()


def test_messages_arrive_in_order(systemd_socket: FakeSystemd) -> None:
    notifier = notify.default_notifier()  # NOTIFY_SOCKET from the environment
    assert notifier.ready("model loaded, first frame read")
    assert notifier.status("gate1 up 15.0 fps")
    assert notifier.watchdog()
    assert notifier.stopping("draining")

    assert systemd_socket.receive() == {"READY": "1", "STATUS": "model loaded, first frame read"}
    assert systemd_socket.receive() == {"STATUS": "gate1 up 15.0 fps"}
    assert systemd_socket.receive() == {"WATCHDOG": "1"}
    assert systemd_socket.receive() == {"STOPPING": "1", "STATUS": "draining"}
    assert systemd_socket.pending() == 0


def test_reload_sequence_carries_monotonic_time(systemd_socket: FakeSystemd) -> None:
    before_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notify.default_notifier().reloading()
    assert notify.default_notifier().ready()
    after_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    reloading = systemd_socket.receive()
    assert reloading["RELOADING"] == "1"
    assert before_us <= int(reloading["MONOTONIC_USEC"]) <= after_us
    assert systemd_socket.receive() == {"READY": "1"}


def test_abstract_namespace_socket(abstract_socket: FakeSystemd) -> None:
    with Notifier(abstract_socket.address) as notifier:
        assert notifier.enabled
        assert notifier.ready()
        assert notifier.status("gate1 up")
    assert abstract_socket.receive() == {"READY": "1"}
    assert abstract_socket.receive() == {"STATUS": "gate1 up"}


def test_child_process_notifies_through_environment(systemd_socket: FakeSystemd) -> None:
    # As under systemd: the service only sees NOTIFY_SOCKET in its environment.
    code = "from anprd import notify; raise SystemExit(0 if notify.default_notifier().ready('up') else 1)"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30)
    assert systemd_socket.receive() == {"READY": "1", "STATUS": "up"}


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify.default_notifier().enabled
    assert notify.default_notifier().ready() is False
    assert notify.default_notifier().watchdog() is False
    assert notify.default_notifier().stopping() is False


def test_unreachable_socket_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    # One warning per failure streak, not one per message.
    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1


def test_status_is_one_short_line(abstract_socket: FakeSystemd) -> None:
    notifier = Notifier(abstract_socket.address)
    notifier.status("line one\nWATCHDOG=1\n" + "x" * 500)
    received = abstract_socket.receive()
    assert set(received) == {"STATUS"}  # the embedded newline did not smuggle a WATCHDOG=1
    assert received["STATUS"].startswith("line one WATCHDOG=1 x")
    assert len(received["STATUS"]) <= 200


def test_format_status() -> None:
    text = format_status({"gate1": 14.94, "gate2": 0.0}, {"gate1": "up", "gate2": "reconnecting"})
    assert text == "gate1 up 14.9 fps; gate2 reconnecting 0.0 fps"
    assert format_status({}, {}) == "no cameras"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval_s(environ, pid=4242) == expected


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_pings_only_while_frames_advance(abstract_socket: FakeSystemd) -> None:
    clock = FakeClock()
    dog = Watchdog(Notifier(abstract_socket.address), stall_timeout_s=5.0, ping_interval_s=1.0, clock=clock)

    assert dog.tick() is False, "no ping before the first frame"
    dog.frame_advanced()
    sent = []
    for step in range(13):  # t = 100.0 .. 106.0 in 0.5 s steps, frames stop after t=100
        clock.now = 100.0 + step * 0.5
        sent.append(dog.tick())
    # Pings at 100, 101, ..., 105 (rate limited to 1/s); at 105.5 the 5 s stall limit is passed.
    assert sent == [True, False] * 5 + [True, False, False]
    assert dog.is_stalled()
    assert abstract_socket.pending() == 6

    for _ in range(5):  # stalled: no pings however often tick() is called
        clock.now += 1.0
        assert dog.tick() is False
    assert abstract_socket.pending() == 0

    dog.frame_advanced()  # pipeline recovers
    assert dog.tick() is True
    assert abstract_socket.receive() == {"WATCHDOG": "1"}


def test_watchdog_pings_through_a_camera_outage_only_while_the_worker_loops(
    abstract_socket: FakeSystemd,
) -> None:
    clock = FakeClock()
    dog = Watchdog(Notifier(abstract_socket.address), stall_timeout_s=5.0, ping_interval_s=1.0, clock=clock)
    clock.now = 100.0
    dog.frame_advanced()
    dog.worker_looped()
    clock.now = 110.0  # no frame for 10 s
    dog.worker_looped()
    assert dog.tick() is False  # the cameras are not down: frames should come, so a stall
    assert dog.tick(cameras_down=True) is True  # down and reconnecting: the process copes
    assert not dog.is_stalled(cameras_down=True)
    clock.now = 116.0  # the worker has not looped for 6 s: hung, outage or not
    assert dog.tick(cameras_down=True) is False
    assert dog.is_stalled(cameras_down=True)
    assert abstract_socket.pending() == 1


def test_watchdog_without_watchdogsec_never_pings(
    abstract_socket: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    dog = Watchdog(Notifier(abstract_socket.address), clock=FakeClock())
    dog.frame_advanced()
    assert dog.ping_interval_s is None
    assert dog.tick() is False
    assert abstract_socket.pending() == 0


def test_watchdog_takes_interval_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert Watchdog(Notifier(""), clock=FakeClock()).ping_interval_s == 10.0


def test_notify_config_bounds() -> None:
    config = NotifyConfig()
    assert (config.stall_timeout_s, config.drain_timeout_s, config.status_interval_s) == (10, 10, 5)
    with pytest.raises(ValidationError):
        NotifyConfig(stall_timeout_s=0)
    with pytest.raises(ValidationError):
        NotifyConfig(watchdog=True)  # unknown keys fail
