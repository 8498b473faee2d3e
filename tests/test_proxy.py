"""Fan-in: `anprd proxy` (a real process) between daemons' publishers and one subscriber, CURVE
on both sides: with in-process publishers, and with two real `anprd run` daemons (the fault
table's `proxy_fan_in` case, scripts/faults.py)."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import zmq

from anprd.config.publisher import PublisherConfig
from anprd.curve import CurveClientKeys, keygen
from anprd.events import EventSequencer
from anprd.proxy import EventProxy, ProxyError, proxy_command
from anprd.publisher import EventPublisher
from anprd.subscriber import EventSubscriber
from anprd.types import Box, Candidate, PlateEvent

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 20.0  # generous: the machine is shared with a training job
SILENCE_S = 1.0


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def make_event(sequence: int, camera_id: str, plate: str = "AB12CDE") -> PlateEvent:
    return PlateEvent(str(uuid.uuid4()), sequence, camera_id, plate, 0.9, (Candidate(plate, 0.9),),
                      Box(10, 20, 100, 25), 1_714_564_800.0, 1_714_564_801.0, sequence, sequence, 1)


@pytest.fixture
def proxy_process(tmp_path: Path) -> Iterator[tuple[dict[str, str], dict[str, tuple[Path, Path]]]]:
    """`anprd proxy` with CURVE on both sides: daemons gate and yard may publish, viewer may read."""
    keys = {name: keygen(tmp_path / "keys" / name, name)
            for name in ("proxy", "gate", "yard", "intruder", "viewer")}
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from anprd.cli import main; sys.exit(main())", "proxy",
         "--frontend", "tcp://127.0.0.1:*", "--backend", "tcp://127.0.0.1:*",
         "--curve-secret-key", str(keys["proxy"][1]),
         "--frontend-clients", str(keys["gate"][0]), str(keys["yard"][0]),
         "--backend-clients", str(keys["viewer"][0])],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, process.stderr.read() if process.stderr else "no output"
        yield json.loads(line), keys
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=DEADLINE_S) == 0
        finally:
            process.kill()
            process.communicate()


def daemon_publisher(context: zmq.Context, frontend: str, keys: dict[str, tuple[Path, Path]],
                     name: str, spool: Path) -> EventPublisher:
    config = PublisherConfig(endpoint=frontend, mode="connect", spool_path=spool, spool_fsync=False,
                             curve_secret_key=keys[name][1], curve_server_key=keys["proxy"][0])
    return EventPublisher(config, context)


def test_two_daemons_reach_one_subscriber_through_the_proxy_with_curve(
    context: zmq.Context, tmp_path: Path, proxy_process: tuple[dict[str, str], dict[str, tuple[Path, Path]]]
) -> None:
    endpoints, keys = proxy_process
    gate = daemon_publisher(context, endpoints["frontend"], keys, "gate", tmp_path / "gate.jsonl")
    yard = daemon_publisher(context, endpoints["frontend"], keys, "yard", tmp_path / "yard.jsonl")
    intruder = daemon_publisher(context, endpoints["frontend"], keys, "intruder",
                                tmp_path / "intruder.jsonl")
    viewer = EventSubscriber(endpoints["backend"], context=context,
                             curve=CurveClientKeys.from_files(keys["proxy"][0], keys["viewer"][1]))
    stranger = EventSubscriber(endpoints["backend"], context=context,  # a subscriber not allowed in
                               curve=CurveClientKeys.from_files(keys["proxy"][0], keys["intruder"][1]))
    with gate, yard, intruder, viewer, stranger:
        # Probe until each allowed daemon's events get through (subscriptions travel upstream).
        waiting = {"gate": gate, "yard": yard}
        deadline = time.monotonic() + DEADLINE_S
        while waiting:
            assert time.monotonic() < deadline, f"no event from {sorted(waiting)}"
            for name, publisher in waiting.items():
                publisher.publish(make_event(1, name, "PROBE"))
            while (event := viewer.recv(0.05)) is not None:
                waiting.pop(event["camera_id"], None)
        while viewer.recv(0.2) is not None:
            pass
        sequences = {"gate": EventSequencer(), "yard": EventSequencer(), "intruder": EventSequencer()}
        for _ in range(10):
            for name, publisher in (("gate", gate), ("yard", yard), ("intruder", intruder)):
                publisher.publish(make_event(sequences[name].next(), name))
        got: dict[str, list[int]] = {"gate": [], "yard": []}
        while sum(map(len, got.values())) < 20:
            event = viewer.recv(DEADLINE_S)
            assert event is not None, f"only {got} arrived"
            assert event["camera_id"] != "intruder", "a daemon whose key is not allowed got through"
            got[event["camera_id"]].append(event["sequence"])
            assert event["stream"] == (gate if event["camera_id"] == "gate" else yard).stream
        assert got == {"gate": list(range(1, 11)), "yard": list(range(1, 11))}
        assert gate.stream != yard.stream  # each daemon keeps its own numbering
        assert viewer.recv(SILENCE_S) is None  # nothing from the intruder came after them either
        assert stranger.recv(0) is None


def load_faults() -> ModuleType:
    """scripts/faults.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("faults", REPO / "scripts" / "faults.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["faults"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_two_anprd_run_daemons_behind_anprd_proxy_reach_one_curve_subscriber(tmp_path: Path) -> None:
    """Real processes: `anprd keygen` keys, `anprd proxy` with CURVE on both sides, two `anprd run`
    daemons (cameras gate and yard, publisher.mode: connect, each replaying 2.2 s of the bundled
    clip to its end) and `anprd subscribe` with the listed key, without a key and with a key not
    listed. The listed subscriber must print exactly each daemon's spool (its own stream, 1..n, no
    hole); the others nothing."""
    faults = load_faults()
    rows = faults.run_cases(["proxy_fan_in"], tmp_path, limits=None)
    assert [row.case for row in rows] == [
        "fan-in: two daemons behind anprd proxy (CURVE both sides), one subscriber",
        "fan-in: subscribers of the proxy without a key, or with a key not listed"]
    failed = [row for row in rows if not row.passed]
    assert failed == [], failed


def test_an_in_process_proxy_stops_cleanly(context: zmq.Context) -> None:
    with EventProxy("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", context=context) as proxy:
        config = PublisherConfig(endpoint=proxy.frontend, mode="connect")
        with EventPublisher(config, context) as publisher, \
                EventSubscriber(proxy.backend, context=context) as subscriber:
            deadline = time.monotonic() + DEADLINE_S
            while (event := subscriber.recv(0.05)) is None:
                assert time.monotonic() < deadline
                publisher.publish(make_event(1, "cam1"))
            assert event["camera_id"] == "cam1"
    proxy.stop()  # idempotent


def test_proxy_option_errors(context: zmq.Context, tmp_path: Path) -> None:
    public, _ = keygen(tmp_path, "k")
    with pytest.raises(ProxyError, match="need --curve-secret-key"):
        proxy_command("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", frontend_clients=[public])
    with pytest.raises(ProxyError, match="99999"):
        proxy_command("tcp://127.0.0.1:99999", "tcp://127.0.0.1:*")
    holder = context.socket(zmq.PUB)
    port = holder.bind_to_random_port("tcp://127.0.0.1")
    with pytest.raises(ProxyError, match=f"cannot bind the proxy's backend to tcp://127.0.0.1:{port}"):
        EventProxy("tcp://127.0.0.1:*", f"tcp://127.0.0.1:{port}", context=context)
    holder.close(linger=0)
