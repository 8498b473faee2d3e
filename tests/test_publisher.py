"""Publisher and subscriber over real ZeroMQ sockets on loopback (tcp) and ipc."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import zmq

from anprd.config.publisher import PublisherConfig
from anprd.events import EventSequencer
from anprd.publisher import EventPublisher, EventSpool, PublisherError, Topic, topic_for
from anprd.subscriber import EventDecodeError, EventSubscriber, subscribe_command
from anprd.types import Box, Candidate, PlateEvent

REPO = Path(__file__).resolve().parents[1]

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schema" / "plate_event.schema.json"
PROBE = "PROBE"  # plate of the events sent until a subscriber is known to be connected
DEADLINE_S = 20.0  # generous: the machine is shared with a training job


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def make_event(sequence: int, camera_id: str = "cam1", plate: str = "AB12CDE") -> PlateEvent:
    return PlateEvent(
        event_id=str(uuid.uuid4()),
        sequence=sequence,
        camera_id=camera_id,
        plate=plate,
        confidence=0.9,
        candidates=(Candidate(plate, 0.9),),
        box=Box(10, 20, 100, 25),
        first_seen=1_714_564_800.0,
        last_seen=1_714_564_801.0,
        first_frame=sequence,
        last_frame=sequence + 5,
        frames_seen=6,
    )


def publisher_on_random_port(context: zmq.Context, **settings: Any) -> EventPublisher:
    return EventPublisher(PublisherConfig(endpoint="tcp://127.0.0.1:*", **settings), context)


def wait_connected(
    publisher: EventPublisher, subscribers: list[EventSubscriber], camera_id: str = "cam1"
) -> None:
    """Publish probes until every subscriber got one (the slow joiner loses early messages)."""
    waiting = list(subscribers)
    deadline = time.monotonic() + DEADLINE_S
    while waiting:
        assert time.monotonic() < deadline, "subscribers never connected"
        publisher.publish(make_event(1, camera_id, PROBE))
        waiting = [s for s in waiting if not _got_probe(s)]


def _got_probe(subscriber: EventSubscriber) -> bool:
    while (event := subscriber.recv(0.05)) is not None:
        if event["plate"] == PROBE:
            return True
    return False


def receive(subscriber: EventSubscriber, count: int) -> list[dict[str, Any]]:
    """The next `count` non-probe events (fails if one takes longer than the deadline)."""
    events: list[dict[str, Any]] = []
    while len(events) < count:
        event = subscriber.recv(DEADLINE_S)
        assert event is not None, f"only {len(events)} of {count} events arrived"
        if event["plate"] != PROBE:
            events.append(event)
    return events


def test_events_arrive_in_order_and_validate(
    context: zmq.Context, validator: jsonschema.Draft202012Validator
) -> None:
    with publisher_on_random_port(context) as publisher:
        assert publisher.endpoint.startswith("tcp://127.0.0.1:")
        with EventSubscriber(publisher.endpoint, context=context) as subscriber:
            wait_connected(publisher, [subscriber])
            probes = publisher.events_published
            sequencer = EventSequencer()
            sent = [make_event(sequencer.next()) for _ in range(25)]
            for event in sent:
                publisher.publish(event)
            received = receive(subscriber, 25)
    assert [e["sequence"] for e in received] == list(range(1, 26))
    assert [e["event_id"] for e in received] == [e.event_id for e in sent]
    for event in received:
        validator.validate(event)
    assert publisher.events_published == probes + 25


def test_topic_filter_by_camera(context: zmq.Context) -> None:
    with publisher_on_random_port(context) as publisher:
        only_cam1 = EventSubscriber(publisher.endpoint, "cam1", context=context)
        everything = EventSubscriber(publisher.endpoint, context=context)
        wait_connected(publisher, [only_cam1, everything])
        cameras = ["cam1", "cam10", "cam2", "cam1", "cam10", "cam1"]  # cam10 shares the prefix
        for sequence, camera in enumerate(cameras, start=1):
            publisher.publish(make_event(sequence, camera))
        publisher.publish(make_event(99, "cam1", "END0000"))
        # Messages keep their order, so everything before the end marker has been seen.
        got = receive(only_cam1, 4)
        assert [e["camera_id"] for e in got] == ["cam1"] * 3 + ["cam1"]
        assert [e["sequence"] for e in got] == [1, 4, 6, 99]
        assert [e["camera_id"] for e in receive(everything, 7)] == [*cameras, "cam1"]
        only_cam1.stop()
        everything.stop()
    assert topic_for("cam1") == f"{Topic.PLATE}.cam1" == "plate.cam1"


def test_burst_of_5000_events_all_arrive(context: zmq.Context) -> None:
    config_hwm = 100_000
    publisher = publisher_on_random_port(context, sndhwm=config_hwm)
    subscriber = EventSubscriber(publisher.endpoint, context=context, rcvhwm=config_hwm)
    with publisher, subscriber:
        wait_connected(publisher, [subscriber])
        events = [make_event(n) for n in range(1, 5001)]
        for event in events:
            publisher.publish(event)
        received = receive(subscriber, 5000)
    assert [e["sequence"] for e in received] == list(range(1, 5001))


def test_ipc_endpoint(context: zmq.Context, tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path / 'events.sock'}"
    assert len(endpoint) - len("ipc://") <= 107, "ipc paths are limited to 107 characters"
    publisher = EventPublisher(PublisherConfig(endpoint=endpoint), context)
    with publisher, EventSubscriber(endpoint, context=context) as subscriber:
        wait_connected(publisher, [subscriber])
        publisher.publish(make_event(7))
        (event,) = receive(subscriber, 1)
    assert event["sequence"] == 7


def test_connect_mode_reaches_a_bound_subscriber(context: zmq.Context) -> None:
    sink = context.socket(zmq.SUB)
    sink.setsockopt(zmq.SUBSCRIBE, b"plate.")
    port = sink.bind_to_random_port("tcp://127.0.0.1")
    config = PublisherConfig(endpoint=f"tcp://127.0.0.1:{port}", mode="connect")
    with EventPublisher(config, context) as publisher:
        deadline = time.monotonic() + DEADLINE_S
        while not sink.poll(50):
            assert time.monotonic() < deadline
            publisher.publish(make_event(1))
        topic, data = sink.recv_multipart()
    assert topic == b"plate.cam1" and json.loads(data)["camera_id"] == "cam1"


def test_bind_failure_names_the_endpoint(
    context: zmq.Context, caplog: pytest.LogCaptureFixture
) -> None:
    holder = context.socket(zmq.PUB)
    port = holder.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    with (
        caplog.at_level(logging.ERROR, logger="anprd.publisher"),
        pytest.raises(PublisherError, match=endpoint),
    ):
        EventPublisher(PublisherConfig(endpoint=endpoint), context)
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert endpoint in caplog.records[0].getMessage()


def test_spool_holds_every_event_sent(context: zmq.Context, tmp_path: Path) -> None:
    # That the line is written before the send: test_an_event_is_sent_only_once_its_spool_write_is_done
    spool = tmp_path / "spool" / "events.jsonl"
    publisher = publisher_on_random_port(context, spool_path=spool)
    with publisher, EventSubscriber(publisher.endpoint, context=context) as subscriber:
        wait_connected(publisher, [subscriber])
        for n in range(1, 11):
            publisher.publish(make_event(n))
            (event,) = receive(subscriber, 1)
            lines = spool.read_text().splitlines()
            assert json.loads(lines[-1])["event_id"] == event["event_id"]
    spooled = [json.loads(line) for line in spool.read_text().splitlines()]
    assert [e["sequence"] for e in spooled if e["plate"] != PROBE] == list(range(1, 11))
    assert spool.stat().st_mode & 0o777 == 0o600  # plates: readable by the daemon's user only


def test_spool_rotates_by_size_without_losing_events(
    context: zmq.Context, tmp_path: Path, validator: jsonschema.Draft202012Validator
) -> None:
    spool = tmp_path / "events.jsonl"
    settings = {"spool_path": spool, "spool_max_bytes": 1024, "spool_backups": 50}
    with publisher_on_random_port(context, **settings) as publisher:
        for n in range(1, 31):  # nobody listening: the spool still has every event
            publisher.publish(make_event(n))
    files = sorted(tmp_path.glob("events.jsonl.*"), key=lambda p: -int(p.suffix[1:])) + [spool]
    assert len(files) > 2
    assert all(path.stat().st_size <= 1024 for path in files)
    events = [json.loads(line) for path in files for line in path.read_text().splitlines()]
    assert [e["sequence"] for e in events] == list(range(1, 31))
    validator.validate(events[0])


def test_spool_rotation_deletes_the_oldest_file_beyond_its_backups(
    context: zmq.Context, tmp_path: Path
) -> None:
    spool = tmp_path / "events.jsonl"
    settings = {"spool_path": spool, "spool_max_bytes": 1024, "spool_backups": 2}
    with publisher_on_random_port(context, **settings) as publisher:
        for n in range(1, 31):  # two events a file: 15 files' worth
            publisher.publish(make_event(n))
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    files = [spool.with_name("events.jsonl.2"), spool.with_name("events.jsonl.1"), spool]  # oldest first
    sequences = [json.loads(line)["sequence"] for path in files for line in path.read_text().splitlines()]
    assert sequences == list(range(sequences[0], 31)) and sequences[0] > 20  # the newest, in order


def _read_available(fd: int) -> bytes:
    """Everything a non-blocking descriptor has to read now."""
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return data
        data += chunk


def test_an_event_is_sent_only_once_its_spool_write_is_done(context: zmq.Context, tmp_path: Path) -> None:
    # The spool is a FIFO whose buffer is full: a disk that has not yet taken the write. The
    # publisher must wait in the spool write with the event not yet on the wire, and send it once
    # the line is written.
    spool = tmp_path / "events.fifo"
    os.mkfifo(spool)
    other_end = os.open(spool, os.O_RDWR | os.O_NONBLOCK)
    publisher = publisher_on_random_port(context, spool_path=spool, spool_fsync=False)
    with publisher, EventSubscriber(publisher.endpoint, context=context) as subscriber:
        connected = threading.Event()

        def read_probes() -> None:  # their lines never fill the FIFO, however many it takes
            while not connected.wait(0.01):
                _read_available(other_end)

        probes = threading.Thread(target=read_probes)
        probes.start()
        try:
            wait_connected(publisher, [subscriber])
        finally:
            connected.set()
            probes.join()
        _read_available(other_end)
        filled = 0
        for chunk in (b"x" * 4096, b"x"):  # full to the last byte
            with contextlib.suppress(BlockingIOError):
                while True:
                    filled += os.write(other_end, chunk)
        event = make_event(2)
        writer = threading.Thread(target=publisher.publish, args=(event,))
        writer.start()
        written = b""
        try:
            assert subscriber.recv(2.0) is None, "sent before its spool line was written"
            assert writer.is_alive()
        finally:  # make room: the write goes through, then the send
            deadline = time.monotonic() + DEADLINE_S
            while not written.endswith(b"\n") and time.monotonic() < deadline:
                written += _read_available(other_end)
                writer.join(0.05)
        writer.join(DEADLINE_S)
        os.close(other_end)
        assert written[:filled] == b"x" * filled
        assert json.loads(written[filled:])["event_id"] == event.event_id
        (received,) = receive(subscriber, 1)
    assert received["event_id"] == event.event_id


def test_spool_drops_an_unfinished_last_line_left_by_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"sequence":1}\n{"seq')  # the process died mid-append
    spool = EventSpool(path, max_bytes=1 << 20, backups=1, fsync=False)
    spool.append(b'{"sequence":2}')
    spool.close()
    assert path.read_bytes() == b'{"sequence":1}\n{"sequence":2}\n'


FULL_DISK = """
import os, resource, signal, sys
from anprd.publisher import EventSpool
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (150, hard))  # a disk that fills at 150 bytes
spool = EventSpool(sys.argv[1], max_bytes=1 << 20, backups=1, fsync=False)
record = b'{"sequence":%d,"pad":"' + b"x" * 40 + b'"}'
for n in range(1, 6):
    try:
        spool.append(record % n)
    except OSError as exc:
        print(n, exc.errno)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
spool.append(b'{"sequence":9}')  # space again: the next append starts on a line of its own
"""


def test_a_full_disk_leaves_only_whole_lines_in_the_spool(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(path)], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    failed = [int(line.split()[0]) for line in result.stdout.splitlines()]
    assert failed == [3, 4, 5]  # two 57-byte lines fit in 150 bytes, the third does not
    lines = path.read_bytes().splitlines(keepends=True)
    assert [json.loads(line)["sequence"] for line in lines] == [1, 2, 9]
    assert all(line.endswith(b"\n") for line in lines)


def test_stopped_publisher_refuses_to_send(context: zmq.Context) -> None:
    publisher = publisher_on_random_port(context)
    publisher.stop()
    publisher.stop()  # idempotent
    with pytest.raises(PublisherError, match="stopped"):
        publisher.publish(make_event(1))


def test_recv_times_out_instead_of_blocking(context: zmq.Context) -> None:
    with EventSubscriber("tcp://127.0.0.1:9", context=context) as subscriber:
        assert subscriber.recv(0.05) is None
        assert subscriber.recv(0) is None


def test_malformed_message_raises(context: zmq.Context) -> None:
    raw = context.socket(zmq.PUB)
    port = raw.bind_to_random_port("tcp://127.0.0.1")
    with EventSubscriber(f"tcp://127.0.0.1:{port}", "cam1", context=context) as subscriber:
        deadline = time.monotonic() + DEADLINE_S
        while subscriber.recv(0.05) is None:
            assert time.monotonic() < deadline
            raw.send_multipart([b"plate.cam1", b"{}"])
        while subscriber.recv(0.05) is not None:  # drain the other probes
            pass
        raw.send_multipart([b"plate.cam1", b"not json"])
        with pytest.raises(EventDecodeError, match="not JSON"):
            subscriber.recv(DEADLINE_S)


def _run_command(**arguments: Any) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(subscribe_command(**arguments)))
    thread.start()
    return thread, result


def _decode_stream(text: str) -> list[dict[str, Any]]:
    decoder, position, events = json.JSONDecoder(), 0, []
    while text[position:].strip():
        while text[position].isspace():
            position += 1
        event, position = decoder.raw_decode(text, position)
        events.append(event)
    return events


@pytest.mark.parametrize("pretty", [False, True])
def test_subscribe_command_prints_filtered_events(
    context: zmq.Context,
    capsys: pytest.CaptureFixture[str],
    validator: jsonschema.Draft202012Validator,
    pretty: bool,
) -> None:
    with publisher_on_random_port(context) as publisher:
        thread, result = _run_command(
            endpoint=publisher.endpoint,
            camera_id="cam1",
            pretty=pretty,
            max_events=3,
            timeout_s=DEADLINE_S,
        )
        sequence = 0
        while thread.is_alive():  # keep publishing until it has printed 3 (slow joiner)
            sequence += 1
            publisher.publish(make_event(sequence, "cam2"))
            publisher.publish(make_event(sequence, "cam1"))
            thread.join(timeout=0.02)
    assert result == [0]
    out = capsys.readouterr().out
    events = _decode_stream(out)
    assert len(events) == 3
    if pretty:
        assert len(out.splitlines()) > 3
    else:  # one event per line
        assert [json.loads(line) for line in out.splitlines()] == events
    sequences = [e["sequence"] for e in events]
    assert sequences == sorted(sequences) and len(set(sequences)) == 3
    for event in events:
        assert event["camera_id"] == "cam1"
        validator.validate(event)


def test_subscribe_command_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    silent = "tcp://127.0.0.1:9"  # nothing publishes there
    assert subscribe_command(silent, None, False, max_events=1, timeout_s=0.1) == 1
    assert subscribe_command(silent, "cam1", False, max_events=None, timeout_s=0.1) == 0
    assert subscribe_command("bogus://x", None, False, max_events=1, timeout_s=0.1) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "bogus://x" in captured.err


# --- the numbering across restarts ---------------------------------------------------------


def test_a_restart_continues_the_sequence_and_the_stream(context: zmq.Context, tmp_path: Path) -> None:
    spool = tmp_path / "events.jsonl"
    with publisher_on_random_port(context, spool_path=spool) as first:
        assert first.next_sequence == 1
        sequencer = EventSequencer()
        for _ in range(5):
            first.publish(make_event(sequencer.next()))
        assert first.next_sequence == 6
        stream = first.stream
    with spool.open("ab") as file:  # a write cut short by a crash
        file.write(b'{"schema_version":"1.1","stream":"' + stream.encode() + b'","sequence":6,"cam')
    with publisher_on_random_port(context, spool_path=spool) as second:
        assert (second.stream, second.next_sequence) == (stream, 6)
        sequencer = EventSequencer()
        sequencer.advance_to(second.next_sequence)
        second.publish(make_event(sequencer.next()))
    records = [json.loads(line) for line in spool.read_bytes().splitlines()]
    assert [r["sequence"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert {r["stream"] for r in records} == {stream}


def test_a_new_spool_starts_a_new_stream_and_no_spool_one_per_process(
    context: zmq.Context, tmp_path: Path
) -> None:
    with publisher_on_random_port(context, spool_path=tmp_path / "a.jsonl") as first:
        first.publish(make_event(1))
    with publisher_on_random_port(context, spool_path=tmp_path / "b.jsonl") as other:
        assert other.stream != first.stream and other.next_sequence == 1
    with publisher_on_random_port(context) as plain, publisher_on_random_port(context) as again:
        assert plain.stream == again.stream not in (first.stream, other.stream)
    uuid.UUID(first.stream, version=4)


def test_version_1_0_spool_numbering_goes_on_under_a_stream(context: zmq.Context, tmp_path: Path) -> None:
    spool = tmp_path / "events.jsonl"
    spool.write_text('{"schema_version":"1.0","sequence":7}\n{"schema_version":"1.0","sequence":8}\n')
    with publisher_on_random_port(context, spool_path=spool) as publisher:
        assert publisher.next_sequence == 9
        uuid.UUID(publisher.stream, version=4)


KILLED_DAEMON = """
import sys, uuid
from anprd.config.publisher import PublisherConfig
from anprd.events import EventSequencer
from anprd.publisher import EventPublisher
from anprd.types import Box, Candidate, PlateEvent

publisher = EventPublisher(PublisherConfig(endpoint="tcp://127.0.0.1:*", spool_path=sys.argv[1]))
sequencer = EventSequencer()
sequencer.advance_to(publisher.next_sequence)
print(publisher.stream, flush=True)
while True:
    n = sequencer.next()
    publisher.publish(PlateEvent(str(uuid.uuid4()), n, "cam1", "AB12CDE", 0.9, (Candidate("AB12CDE", 0.9),),
                                 Box(1, 2, 3, 4), 1.0, 2.0, n, n, 1))
    print(n, flush=True)
"""


def _run_until_killed(spool: Path, events: int) -> tuple[str, int]:
    """Run a publishing process until it has published `events`, SIGKILL it; (stream, first n)."""
    process = subprocess.Popen([sys.executable, "-c", KILLED_DAEMON, str(spool)], cwd=REPO,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        stream = process.stdout.readline().strip()
        first = int(process.stdout.readline())
        for _ in range(events - 1):
            process.stdout.readline()
    finally:
        process.kill()  # SIGKILL: no drain, no close
        process.wait(timeout=DEADLINE_S)
        if process.stdout is not None:
            process.stdout.close()
    return stream, first


def test_the_sequence_goes_on_after_a_sigkill(tmp_path: Path) -> None:
    spool = tmp_path / "events.jsonl"
    stream, first = _run_until_killed(spool, 20)
    assert first == 1
    last = json.loads(spool.read_bytes().splitlines()[-1])["sequence"]
    with spool.open("ab") as file:  # as if the kill had cut a line short
        file.write(b'{"schema_version":"1.1","seq')
    again, first = _run_until_killed(spool, 5)
    assert (again, first) == (stream, last + 1)
    records = [json.loads(line) for line in spool.read_bytes().splitlines()]
    assert [r["sequence"] for r in records] == list(range(1, len(records) + 1))
    assert {r["stream"] for r in records} == {stream}


# --- the bounded send queue -----------------------------------------------------------------


def test_a_frozen_subscriber_is_counted_and_costs_the_others_nothing(
    context: zmq.Context, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = publisher_on_random_port(context, sndhwm=5)
    healthy = EventSubscriber(publisher.endpoint, context=context)
    frozen = context.socket(zmq.SUB)  # reads the probes, then nothing until the end
    frozen.setsockopt(zmq.RCVHWM, 5)
    frozen.setsockopt(zmq.RCVBUF, 4096)  # small kernel buffers: the queue fills sooner
    frozen.setsockopt(zmq.SUBSCRIBE, b"plate.")
    frozen.connect(publisher.endpoint)
    crop = os.urandom(20_000)  # big events (a plate crop each)
    count = 600
    started = time.monotonic()
    with publisher, healthy, caplog.at_level(logging.WARNING, logger="anprd.publisher"):
        deadline = time.monotonic() + DEADLINE_S
        while not frozen.poll(10):
            assert time.monotonic() < deadline, "never connected"
            publisher.publish(make_event(1, "cam1", PROBE))
        wait_connected(publisher, [healthy])
        while frozen.poll(0):
            frozen.recv_multipart()
        not_delivered = 0
        received = []
        for n in range(1, count + 1):
            event = PlateEvent(**{**make_event(n).__dict__, "crop_jpeg": crop})
            not_delivered += not publisher.publish(event)
            received += receive(healthy, 1)  # in step, so only the frozen one falls behind
        late: list[int] = []  # thawed: what its queue and socket buffers still held
        while frozen.poll(500):
            _, data = frozen.recv_multipart()
            if json.loads(data)["plate"] != PROBE:
                late.append(json.loads(data)["sequence"])
    frozen.close(linger=0)
    elapsed = time.monotonic() - started
    assert [e["sequence"] for e in received] == list(range(1, count + 1))
    assert publisher.overflows == not_delivered >= 1
    assert late == sorted(late) and len(late) < count  # it missed events: its queue was bounded
    warnings = [r.getMessage() for r in caplog.records if "not keeping up" in r.getMessage()]
    assert 1 <= len(warnings) <= 1 + elapsed / 10  # rate limited: one line per 10 s at most
    assert "publisher.sndhwm 5" in warnings[0]


def test_the_send_queue_bound_is_checked() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        PublisherConfig(sndhwm=0)  # 0 was "unlimited": a frozen subscriber took all memory
    assert PublisherConfig().sndhwm == 10_000


def test_overflows_reach_the_metric() -> None:
    from anprd.metrics import Metrics

    metrics = Metrics(process_metrics=False)
    assert metrics.registry.get_sample_value("anprd_subscriber_overflows_total") == 0
    metrics.subscriber_overflowed()
    assert metrics.registry.get_sample_value("anprd_subscriber_overflows_total") == 1
