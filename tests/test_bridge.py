"""`anprd bridge mqtt` against a real mosquitto on loopback, fed by a real ZeroMQ socket.

The broker is Debian's ``mosquitto`` (installed by ``make setup``), started by the tests on a free
port with a config of their own; the bridge runs as a real ``anprd bridge mqtt`` process. The
events come from a ZeroMQ XPUB socket: it receives the bridge's subscription, so an event is sent
only once the bridge can get it (a PUB would drop what it sends before the bridge has joined).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from anprd.bridge import BridgeError, EventBuffer, MqttBridgeSettings, discovery_message, parse_broker
from anprd.curve import CurveServer, CurveServerKeys, keygen

REPO_ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 30.0  # safety limit for each wait; nothing here asserts on durations


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("mosquitto (the MQTT broker these tests start) is not installed: run `make setup` "
                "(scripts/install_system_deps.sh installs Debian's mosquitto)")


class Broker:
    """A mosquitto process on 127.0.0.1:port; keeps its port across restarts. `tls`: (CA, certificate,
    key) files for a TLS listener."""

    def __init__(self, folder: Path, tls: tuple[Path, Path, Path] | None = None) -> None:
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        # Started as root, mosquitto would become user `mosquitto`, who cannot read the test's
        # folder; as anyone else it ignores `user`.
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
                 f"user {getpass.getuser()}"]
        if tls is not None:
            lines += [f"cafile {tls[0]}", f"certfile {tls[1]}", f"keyfile {tls[2]}"]
        self.config.write_text("\n".join(lines) + "\n")
        self.log = folder / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([mosquitto_binary(), "-c", str(self.config)],
                                            stdout=log, stderr=log)
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"mosquitto exited: {self.log.read_text(errors='replace')[-2000:]}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        pytest.fail("mosquitto did not listen in time")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


class Listener:
    """A paho client subscribed to everything, collecting (topic, payload, retain) in order."""

    def __init__(self, port: int, ca: Path | None = None) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._condition = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-listener")
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe("#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._condition:
            self.messages.append((message.topic, message.payload, bool(message.retain)))
            self._condition.notify_all()

    def wait_for(self, predicate: Any, what: str) -> list[tuple[str, bytes, bool]]:
        deadline = time.monotonic() + DEADLINE_S
        with self._condition:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"timed out waiting for {what}; got {[m[:2] for m in self.messages]}")
                self._condition.wait(remaining)
            return list(self.messages)

    def payloads(self, topic: str) -> list[bytes]:
        with self._condition:
            return [payload for t, payload, _ in self.messages if t == topic]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    server = Broker(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def event_socket() -> Iterator[tuple[zmq.Socket, str]]:
    context = zmq.Context()
    xpub = context.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    xpub.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscriber's subscription, not only the first
    port = xpub.bind_to_random_port("tcp://127.0.0.1")
    yield xpub, f"tcp://127.0.0.1:{port}"
    xpub.close(linger=0)
    context.term()


def wait_for_subscription(xpub: zmq.Socket) -> None:
    assert xpub.poll(timeout=DEADLINE_S * 1000), "the bridge never subscribed"
    message = xpub.recv()
    assert message[:1] == b"\x01" and message[1:].startswith(b"plate."), message


def make_event(sequence: int, camera_id: str = "gate-1", crop: bool = False) -> dict[str, Any]:
    event: dict[str, Any] = {"schema_version": "1.0", "event_id": f"id-{sequence}", "sequence": sequence,
                             "camera_id": camera_id, "plate": f"AB{sequence:02d}CDE", "confidence": 0.9}
    if crop:
        event["crop_jpeg"] = "/9j/4AAQ"
    return event


def send(xpub: zmq.Socket, event: dict[str, Any]) -> None:
    xpub.send_multipart([f"plate.{event['camera_id']}".encode(), json.dumps(event).encode()])


def start_bridge(endpoint: str, port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "anprd.cli", "bridge", "mqtt", "--from", endpoint,
             "--broker", f"127.0.0.1:{port}", *extra],
            cwd=REPO_ROOT, stdout=out, stderr=out,
        )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    return process.wait(timeout=DEADLINE_S)


def test_events_reach_the_broker_with_availability_and_home_assistant_discovery(
    broker: Broker, event_socket: tuple[zmq.Socket, str], tmp_path: Path
) -> None:
    xpub, endpoint = event_socket
    listener = Listener(broker.port)
    bridge = start_bridge(endpoint, broker.port, tmp_path / "bridge.log", "--ha-discovery")
    try:
        listener.wait_for(lambda m: ("anprd/availability", b"online", False) in m
                          or ("anprd/availability", b"online", True) in m, "online")
        wait_for_subscription(xpub)
        for sequence in (1, 2, 3):
            send(xpub, make_event(sequence, crop=True))
        send(xpub, make_event(4, camera_id="exit"))
        listener.wait_for(lambda m: sum(t.startswith("anprd/plate/") for t, _, _ in m) >= 4, "4 events")
        received = [json.loads(p) for p in listener.payloads("anprd/plate/gate-1")]
        assert [e["sequence"] for e in received] == [1, 2, 3]
        assert received[0] == make_event(1)  # as sent, crop removed
        assert [json.loads(p)["plate"] for p in listener.payloads("anprd/plate/exit")] == ["AB04CDE"]
        configs = {t: json.loads(p) for t, p, _ in listener.messages if t.startswith("homeassistant/")}
        topic = "homeassistant/sensor/anprd/gate-1_plate/config"
        assert set(configs) == {topic, "homeassistant/sensor/anprd/exit_plate/config"}
        assert configs[topic]["state_topic"] == "anprd/plate/gate-1"
        assert configs[topic]["value_template"] == "{{ value_json.plate }}"
        assert configs[topic]["availability_topic"] == "anprd/availability"
        assert configs[topic]["unique_id"] == "anprd_gate-1_plate"
        assert stop(bridge) == 0
        listener.wait_for(lambda m: m[-1][:2] == ("anprd/availability", b"offline"), "offline on SIGTERM")
    finally:
        stop(bridge, signal.SIGKILL)
        listener.stop()
    # retained: a client arriving now learns the bridge is offline and where the sensors are
    late = Listener(broker.port)
    try:
        messages = late.wait_for(lambda m: len(m) >= 3, "retained messages")
        assert ("anprd/availability", b"offline", True) in messages
        assert all(retain for _, _, retain in messages)
        assert not any(t.startswith("anprd/plate/") for t, _, _ in messages)  # plates are not retained
    finally:
        late.stop()


def test_events_sent_while_the_broker_is_down_arrive_when_it_returns(
    broker: Broker, event_socket: tuple[zmq.Socket, str], tmp_path: Path
) -> None:
    xpub, endpoint = event_socket
    log = tmp_path / "bridge.log"
    bridge = start_bridge(endpoint, broker.port, log, "--with-crops")
    listener = Listener(broker.port)
    try:
        wait_for_subscription(xpub)
        listener.wait_for(lambda m: any(t == "anprd/availability" and p == b"online" for t, p, _ in m),
                          "online")
        send(xpub, make_event(1, crop=True))
        listener.wait_for(lambda m: len(listener.payloads("anprd/plate/gate-1")) >= 1, "event 1")
        assert json.loads(listener.payloads("anprd/plate/gate-1")[0])["crop_jpeg"] == "/9j/4AAQ"
        listener.stop()
        broker.kill()
        deadline = time.monotonic() + DEADLINE_S
        while "lost the MQTT broker" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        for sequence in range(2, 12):
            send(xpub, make_event(sequence))
        broker.start()  # same port; no persistence, so the retained messages went with it
        listener = Listener(broker.port)
        # wait for 2..11 themselves: event 1 may come again first (below), so ten distinct sequences
        # could be 1..10 with 11 still on its way
        listener.wait_for(lambda m: set(range(2, 12)) <= {json.loads(p)["sequence"] for p in
                                                          listener.payloads("anprd/plate/gate-1")},
                          "buffered events")
        sequences = [json.loads(p)["sequence"] for p in listener.payloads("anprd/plate/gate-1")]
        # None lost. QoS 1 is at least once: event 1 comes again when the broker was killed before
        # its acknowledgement reached the bridge (paho resends it first), and any may come twice.
        assert sorted(set(sequences) - {1}) == list(range(2, 12)), sequences
        assert set(sequences) <= set(range(1, 12)), sequences
        assert sequences == sorted(sequences), sequences  # in order
        # the bridge said `online` again to the new broker
        listener.wait_for(lambda m: any(t == "anprd/availability" and p == b"online" for t, p, _ in m),
                          "online after reconnecting")
    finally:
        stop(bridge, signal.SIGKILL)
        listener.stop()


def test_a_killed_bridge_is_announced_offline_by_the_broker(
    broker: Broker, event_socket: tuple[zmq.Socket, str], tmp_path: Path
) -> None:
    _, endpoint = event_socket
    listener = Listener(broker.port)
    bridge = start_bridge(endpoint, broker.port, tmp_path / "bridge.log")
    try:
        listener.wait_for(lambda m: any(p == b"online" for _, p, _ in m), "online")
        assert stop(bridge, signal.SIGKILL) == -signal.SIGKILL
        # no goodbye was sent: this is the last will, published by the broker
        listener.wait_for(lambda m: m[-1][:2] == ("anprd/availability", b"offline"), "the last will")
    finally:
        stop(bridge, signal.SIGKILL)
        listener.stop()


def test_buffer_drops_the_oldest_past_its_bound_and_counts() -> None:
    buffer = EventBuffer(3)
    dropped = [buffer.push("t", str(i).encode()) for i in range(5)]
    assert dropped == [False, False, False, True, True]
    assert buffer.dropped == 2 and len(buffer) == 3
    assert [buffer.pop()[1] for _ in range(3)] == [b"2", b"3", b"4"]


def test_discovery_names_the_camera_sensor() -> None:
    settings = MqttBridgeSettings(endpoint="tcp://127.0.0.1:5555", host="h", port=1, node_id="site-a")
    config = discovery_message(settings, "gate-1")
    assert settings.discovery_topic("gate-1") == "homeassistant/sensor/site-a/gate-1_plate/config"
    assert config["unique_id"] == "site-a_gate-1_plate" and config["device"]["identifiers"] == ["site-a"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("broker.lan", ("broker.lan", 1883)), ("10.0.0.2:8883", ("10.0.0.2", 8883)),
     ("[::1]:1884", ("::1", 1884))],
)
def test_parse_broker(text: str, expected: tuple[str, int]) -> None:
    assert parse_broker(text) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--broker", "h:0"], "--broker: port 0 is outside 1-65535"),
        (["--broker", "h:1", "--topic-prefix", "a/+/b"], "--topic-prefix: 'a/+/b' must be"),
        (["--broker", "h:1", "--from", "tcp://127.0.0.1:70000"], "--from: tcp://127.0.0.1:70000"),
        (["--broker", "h:1", "--username", "u", "--password-file", "/nonexistent/pw"],
         "--password-file: /nonexistent/pw: cannot read"),
        (["--broker", "h:1", "--buffer", "0"], "--buffer: must be at least 1"),
        (["--broker", "h:1", "--curve-client-key", "/nonexistent/k"], "--curve-server-key: CURVE needs both"),
        (["--broker", "h:1", "--curve-server-key", "/nonexistent/d.key", "--curve-client-key",
          "/nonexistent/k"], "--curve-server-key: /nonexistent/d.key: cannot read"),
    ],
)
def test_bad_options_are_one_line_errors(argv: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "anprd.cli", "bridge", "mqtt", *argv],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("anprd bridge: " + message), result.stderr
    with pytest.raises(BridgeError):
        parse_broker("a:b:c")


def make_certificates(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a broker certificate it signed for 127.0.0.1 (openssl); (ca, cert, key)."""
    ca, ca_key = folder / f"{name}-ca.pem", folder / f"{name}-ca.key"
    cert, key, request = folder / f"{name}.pem", folder / f"{name}.key", folder / f"{name}.csr"
    extensions = folder / f"{name}.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    for command in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} CA",
         "-keyout", ca_key, "-out", ca],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", request],
        ["x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
         "-extfile", extensions, "-out", cert],
    ):
        result = subprocess.run(["openssl", *map(str, command)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    return ca, cert, key


def test_tls_to_the_broker_with_its_certificate_checked(
    event_socket: tuple[zmq.Socket, str], tmp_path: Path
) -> None:
    ca, cert, key = make_certificates(tmp_path, "broker")
    other_ca, _, _ = make_certificates(tmp_path, "other")
    broker = Broker(tmp_path, tls=(ca, cert, key))
    broker.start()
    xpub, endpoint = event_socket
    listener = Listener(broker.port, ca=ca)
    # a CA that did not sign the broker's certificate: no connection
    log = tmp_path / "untrusting.log"
    untrusting = start_bridge(endpoint, broker.port, log, "--tls-ca", str(other_ca), "--client-id", "b2")
    bridge = start_bridge(endpoint, broker.port, tmp_path / "bridge.log", "--tls-ca", str(ca))
    try:
        listener.wait_for(lambda m: any(p == b"online" for _, p, _ in m), "online over TLS")
        deadline = time.monotonic() + DEADLINE_S
        while "cannot connect to MQTT broker" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        for _ in range(2):  # both bridges subscribe to the events
            wait_for_subscription(xpub)
        send(xpub, make_event(1))
        listener.wait_for(lambda m: len(listener.payloads("anprd/plate/gate-1")) >= 1, "the event over TLS")
        assert len(listener.payloads("anprd/plate/gate-1")) == 1  # the untrusting bridge sent nothing
    finally:
        stop(untrusting, signal.SIGKILL)
        stop(bridge, signal.SIGKILL)
        listener.stop()
        broker.kill()


def test_a_tls_ca_that_is_no_certificate_is_a_one_line_error(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    result = subprocess.run([sys.executable, "-m", "anprd.cli", "bridge", "mqtt", "--broker", "127.0.0.1:1",
                             "--tls-ca", str(bogus)], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"anprd bridge: --tls-ca: {bogus}: not a PEM CA bundle"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_curve_client_key_others_can_read_is_a_one_line_error(tmp_path: Path) -> None:
    daemon_public, _ = keygen(tmp_path, "daemon")
    _, secret = keygen(tmp_path, "bridge")
    secret.chmod(0o644)
    result = subprocess.run([sys.executable, "-m", "anprd.cli", "bridge", "mqtt", "--broker", "127.0.0.1:1",
                             "--curve-server-key", str(daemon_public), "--curve-client-key", str(secret)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    expected = f"anprd bridge: --curve-client-key: {secret}: is readable by other users"
    assert result.stderr.startswith(expected), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_under_curve_only_the_bridge_with_an_allowed_key_republishes(broker: Broker, tmp_path: Path) -> None:
    """A CURVE publisher (an XPUB made a CURVE server by anprd.curve, as the daemon's is) lets in the
    bridge whose key is listed; a bridge without CURVE and one with a key not listed get nothing."""
    keys = {name: keygen(tmp_path / "keys", name) for name in ("daemon", "bridge", "stranger")}
    context = zmq.Context()
    server = CurveServer(context, CurveServerKeys.from_files(keys["daemon"][1], [keys["bridge"][0]]))
    xpub = context.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
    server.apply(xpub)
    endpoint = f"tcp://127.0.0.1:{xpub.bind_to_random_port('tcp://127.0.0.1')}"
    # Refused handshakes, seen from the publisher's side: a key not listed (ZAP says no: FAILED_AUTH)
    # and no CURVE at all (a mechanism mismatch: libzmq 4.3 reports FAILED_NO_DETAIL).
    no_curve = {zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL}
    monitor = xpub.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                                      | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
    listener = Listener(broker.port)
    curve_options = ["--curve-server-key", str(keys["daemon"][0]), "--curve-client-key"]
    bridges = {
        "anprd": start_bridge(endpoint, broker.port, tmp_path / "allowed.log", *curve_options,
                              str(keys["bridge"][1])),
        "stranger": start_bridge(endpoint, broker.port, tmp_path / "stranger.log", "--topic-prefix",
                                 "stranger", "--client-id", "b-stranger", *curve_options,
                                 str(keys["stranger"][1])),
        "plain": start_bridge(endpoint, broker.port, tmp_path / "plain.log", "--topic-prefix", "plain",
                              "--client-id", "b-plain"),
    }
    try:
        wait_for_subscription(xpub)  # the allowed bridge's, after its CURVE handshake
        refused: set[int] = set()
        deadline = time.monotonic() + DEADLINE_S
        while zmq.EVENT_HANDSHAKE_FAILED_AUTH not in refused or not refused & no_curve:
            remaining = deadline - time.monotonic()
            assert remaining > 0 and monitor.poll(timeout=remaining * 1000), \
                f"both refused bridges should have tried and been refused; saw {refused}"
            refused.add(recv_monitor_message(monitor)["event"])
        for sequence in (1, 2, 3):
            send(xpub, make_event(sequence))
        listener.wait_for(lambda m: len(listener.payloads("anprd/plate/gate-1")) >= 3, "3 events over CURVE")
        for prefix, bridge in bridges.items():  # SIGTERM: each sends what it holds, then `offline`
            assert stop(bridge) == 0, prefix
        listener.wait_for(lambda m: all((f"{prefix}/availability", b"offline") in [x[:2] for x in m]
                                        for prefix in bridges), "offline from every bridge")
        assert [json.loads(p) for p in listener.payloads("anprd/plate/gate-1")] == \
            [make_event(sequence) for sequence in (1, 2, 3)]
        leaked = [t for t, _, _ in listener.messages if t.startswith(("plain/plate/", "stranger/plate/"))]
        assert leaked == []
        later = []
        while xpub.poll(timeout=0):
            later.append(xpub.recv())
        # no other bridge ever subscribed; the allowed one's unsubscription as it closed may be there
        assert all(message[:1] == b"\x00" for message in later), later
    finally:
        for bridge in bridges.values():
            stop(bridge, signal.SIGKILL)
        listener.stop()
        xpub.disable_monitor()
        monitor.close(linger=0)
        xpub.close(linger=0)
        server.close()
        context.term()
