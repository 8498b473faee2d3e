"""CurveZMQ: key files, the publisher and catch-up sockets as CURVE servers, subscribers as clients."""

from __future__ import annotations

import json
import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from anprd.catchup import CatchupClient, CatchupError
from anprd.cli import main as cli_main
from anprd.config import ConfigError, load_config
from anprd.config.publisher import PublisherConfig
from anprd.curve import CurveClientKeys, CurveError, CurveServerKeys, keygen, load_secret_key
from anprd.events import EventSequencer
from anprd.publisher import EventPublisher, PublisherError
from anprd.subscriber import EventSubscriber, subscribe_command
from anprd.types import Box, Candidate, PlateEvent

DEADLINE_S = 20.0  # generous: the machine is shared with a training job
SILENCE_S = 1.0  # how long a refused subscriber is watched for an event that must not come


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """Key pairs: the daemon's, an allowed subscriber's, and a stranger's."""
    return {name: keygen(tmp_path / "keys", name) for name in ("daemon", "client", "stranger")}


def make_event(sequence: int, plate: str = "AB12CDE") -> PlateEvent:
    return PlateEvent(str(uuid.uuid4()), sequence, "cam1", plate, 0.9, (Candidate(plate, 0.9),),
                      Box(10, 20, 100, 25), 1_714_564_800.0, 1_714_564_801.0, sequence, sequence, 1)


def curve_publisher(context: zmq.Context, keys: dict[str, tuple[Path, Path]], tmp_path: Path,
                    **settings: Any) -> EventPublisher:
    config = PublisherConfig(
        endpoint="tcp://127.0.0.1:*", spool_path=tmp_path / "spool" / "events.jsonl",
        spool_fsync=False, catchup_endpoint="tcp://127.0.0.1:*",
        curve_secret_key=keys["daemon"][1], curve_clients=[keys["client"][0]], **settings,
    )
    return EventPublisher(config, context)


def client_keys(keys: dict[str, tuple[Path, Path]], name: str) -> CurveClientKeys:
    return CurveClientKeys.from_files(keys["daemon"][0], keys[name][1])


# --- key files ------------------------------------------------------------------------------


def test_keygen_writes_a_private_secret_and_never_overwrites(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["keygen", str(tmp_path / "k"), "--name", "gate"]) == 0
    public, secret = tmp_path / "k" / "gate.key", tmp_path / "k" / "gate.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert str(public) in capsys.readouterr().out
    pair = load_secret_key(secret)
    assert zmq.curve_public(pair[1]) == pair[0]
    before = secret.read_bytes()
    assert cli_main(["keygen", str(tmp_path / "k"), "--name", "gate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gate.key: exists" in err and "Traceback" not in err
    assert secret.read_bytes() == before


def test_bad_key_files_are_one_line_errors(tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    public, secret = keys["daemon"]
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    shared = tmp_path / "shared.key_secret"  # a secret that others can read is no secret
    shared.write_bytes(secret.read_bytes())
    shared.chmod(0o644)
    mixed = tmp_path / "mixed.key_secret"  # public key of one pair, secret of another
    other = keys["client"][1].read_text()
    mixed.write_text(public.read_text() + "".join(
        line + "\n" for line in other.splitlines() if "secret-key" in line))
    mixed.chmod(0o600)
    cases = [
        (tmp_path / "missing.key_secret", "cannot read: No such file"),
        (tmp_path, "is a folder"),
        (garbage, "is not a ZeroMQ key file"),
        (public, "holds no secret key"),
        (shared, "is readable by other users (mode 0644)"),
        (mixed, "do not belong together"),
    ]
    for path, message in cases:
        with pytest.raises(CurveError) as info:
            load_secret_key(path)
        assert str(info.value).startswith(f"{path}: ") and message in str(info.value)
        assert "\n" not in str(info.value)
    with pytest.raises(CurveError, match="no client public keys"):
        CurveServerKeys.from_files(secret, [])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CurveError, match="holds no public key files"):
        CurveServerKeys.from_files(secret, [empty])


def test_config_names_the_key_and_the_file(tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    config = tmp_path / "config.yaml"

    def load(publisher: str) -> str:
        config.write_text(f"cameras:\n  - id: gate\n    url: {tmp_path / 'keys'}\n"
                          f"publisher:\n{publisher}")
        with pytest.raises(ConfigError) as info:
            load_config(config)
        return str(info.value)

    message = load("  curve_secret_key: nowhere.key_secret\n  curve_clients: [keys]\n")
    assert message == (f"{config}: publisher.curve_secret_key: {tmp_path / 'nowhere.key_secret'}: "
                       "cannot read: No such file or directory (got 'nowhere.key_secret')")
    message = load(f"  curve_secret_key: {keys['daemon'][1]}\n")
    assert "publisher.curve_clients: list the public key files" in message
    message = load(f"  curve_secret_key: {keys['daemon'][1]}\n  curve_clients: [keys, nothing]\n")
    assert message.endswith(f"publisher.curve_clients.1: {tmp_path}/nothing: cannot read: No such file or "
                            "directory (got 'nothing')")
    message = load(f"  mode: connect\n  curve_secret_key: {keys['daemon'][1]}\n")
    assert "publisher.curve_server_key: in connect mode with CURVE" in message
    message = load(f"  curve_clients: [{keys['client'][0]}]\n")
    assert "publisher.curve_clients: needs curve_secret_key" in message
    config.write_text(f"cameras:\n  - id: gate\n    url: {tmp_path / 'keys'}\npublisher:\n"
                      f"  curve_secret_key: keys/daemon.key_secret\n  curve_clients: [keys]\n")
    loaded = load_config(config).publisher
    assert loaded.curve_secret_key == tmp_path / "keys" / "daemon.key_secret"
    assert loaded.curve_clients == [tmp_path / "keys"]


# --- sockets --------------------------------------------------------------------------------


def test_only_an_allowed_subscriber_receives_events(
    context: zmq.Context, tmp_path: Path, keys: dict[str, tuple[Path, Path]]
) -> None:
    with curve_publisher(context, keys, tmp_path) as publisher:
        allowed = EventSubscriber(publisher.endpoint, context=context, curve=client_keys(keys, "client"))
        plain = EventSubscriber(publisher.endpoint, context=context)
        stranger = EventSubscriber(publisher.endpoint, context=context,
                                   curve=client_keys(keys, "stranger"))
        with allowed, plain, stranger:
            deadline = time.monotonic() + DEADLINE_S
            while allowed.recv(0.05) is None:  # connected (and authenticated) once one arrives
                assert time.monotonic() < deadline, "the allowed subscriber never connected"
                publisher.publish(make_event(1, "PROBE"))
            while allowed.recv(0.05) is not None:
                pass
            sequencer = EventSequencer()
            for _ in range(20):
                publisher.publish(make_event(sequencer.next()))
            got = []
            while len(got) < 20:
                event = allowed.recv(DEADLINE_S)
                assert event is not None, f"only {len(got)} of 20 arrived"
                got.append(event["sequence"])
            assert got == list(range(1, 21))
            # The others had all that time, the probes' included, and more.
            assert plain.recv(SILENCE_S) is None
            assert stranger.recv(SILENCE_S) is None


def test_catch_up_is_curve_protected_too(
    context: zmq.Context, tmp_path: Path, keys: dict[str, tuple[Path, Path]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with curve_publisher(context, keys, tmp_path) as publisher:
        sequencer = EventSequencer()
        for _ in range(5):
            publisher.publish(make_event(sequencer.next()))
        assert publisher.catchup_endpoint is not None
        allowed = CatchupClient(publisher.catchup_endpoint, context=context,
                                curve=client_keys(keys, "client"), timeout_s=DEADLINE_S)
        stranger = CatchupClient(publisher.catchup_endpoint, context=context,
                                 curve=client_keys(keys, "stranger"), timeout_s=SILENCE_S)
        plain = CatchupClient(publisher.catchup_endpoint, context=context, timeout_s=SILENCE_S)
        try:
            reply = allowed.fetch(None, 2)
            assert [e["sequence"] for e in reply.events] == [3, 4, 5]
            for refused in (stranger, plain):
                with pytest.raises(CatchupError, match="no catch-up reply"):
                    refused.fetch(None, 0)
        finally:
            for client in (allowed, stranger, plain):
                client.close()
        # The command line, end to end: catch up through CURVE, then follow live.
        code = subscribe_command(
            publisher.endpoint, None, False, max_events=5, timeout_s=DEADLINE_S, since=0,
            catchup=publisher.catchup_endpoint, curve_server_key=keys["daemon"][0],
            curve_client_key=keys["client"][1],
        )
    assert code == 0
    assert [json.loads(line)["sequence"] for line in capsys.readouterr().out.splitlines()] == [1, 2, 3, 4, 5]


def test_subscribe_refuses_bad_curve_options_in_one_line(
    keys: dict[str, tuple[Path, Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = "tcp://127.0.0.1:9"
    assert subscribe_command(endpoint, None, False, 1, 0.1, curve_server_key=keys["daemon"][0]) == 2
    assert subscribe_command(endpoint, None, False, 1, 0.1, curve_server_key=keys["daemon"][0],
                             curve_client_key=keys["client"][0]) == 2  # the public file
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert "needs both --curve-server-key and --curve-client-key" in err[0]
    assert f"{keys['client'][0]}: holds no secret key" in err[1]


def test_publisher_refuses_a_secret_key_others_can_read(
    context: zmq.Context, tmp_path: Path, keys: dict[str, tuple[Path, Path]]
) -> None:
    config = PublisherConfig(endpoint="tcp://127.0.0.1:*", curve_secret_key=keys["daemon"][1],
                             curve_clients=[keys["client"][0]])
    os.chmod(keys["daemon"][1], 0o640)  # loosened after the config was checked
    with pytest.raises(PublisherError, match="readable by other users"):
        EventPublisher(config, context)


def test_a_key_added_to_the_clients_folder_counts_without_a_restart(
    context: zmq.Context, tmp_path: Path, keys: dict[str, tuple[Path, Path]]
) -> None:
    folder = tmp_path / "clients"
    folder.mkdir()
    (folder / "client.key").write_bytes(keys["client"][0].read_bytes())
    config = PublisherConfig(endpoint="tcp://127.0.0.1:*", curve_secret_key=keys["daemon"][1],
                             curve_clients=[folder])
    with EventPublisher(config, context) as publisher:
        (folder / "stranger.key").write_bytes(keys["stranger"][0].read_bytes())  # let it in now
        with EventSubscriber(publisher.endpoint, context=context,
                             curve=client_keys(keys, "stranger")) as newcomer:
            deadline = time.monotonic() + DEADLINE_S
            while (event := newcomer.recv(0.05)) is None:
                assert time.monotonic() < deadline, "the key added to the folder was not taken"
                publisher.publish(make_event(1))
    assert event["sequence"] == 1
