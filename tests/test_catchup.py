"""Catch-up from the spool over real ZeroMQ sockets, and `anprd subscribe --since` / gap filling."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from anprd.catchup import (
    CatchupClient,
    CatchupError,
    UnknownStreamError,
    read_events_after,
)
from anprd.config.publisher import PublisherConfig
from anprd.events import EventSequencer
from anprd.publisher import EventPublisher, EventSpool
from anprd.subscriber import EventSubscriber, GaplessFeed, subscribe_command
from anprd.types import Box, Candidate, PlateEvent

DEADLINE_S = 20.0  # generous: the machine is shared with a training job


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def make_event(sequence: int, camera_id: str = "cam1") -> PlateEvent:
    return PlateEvent(
        event_id=str(uuid.uuid4()),
        sequence=sequence,
        camera_id=camera_id,
        plate="AB12CDE",
        confidence=0.9,
        candidates=(Candidate("AB12CDE", 0.9),),
        box=Box(10, 20, 100, 25),
        first_seen=1_714_564_800.0,
        last_seen=1_714_564_801.0,
        first_frame=sequence,
        last_frame=sequence + 5,
        frames_seen=6,
    )


def spooling_publisher(context: zmq.Context, spool: Path, **settings: Any) -> EventPublisher:
    config = PublisherConfig(endpoint="tcp://127.0.0.1:*", spool_path=spool,
                             catchup_endpoint="tcp://127.0.0.1:*", spool_fsync=False, **settings)
    return EventPublisher(config, context)


def publish_numbered(publisher: EventPublisher, sequencer: EventSequencer, count: int,
                     camera_id: str = "cam1") -> None:
    for _ in range(count):
        publisher.publish(make_event(sequencer.next(), camera_id))


def test_replies_are_bounded_and_resume_where_they_stopped(context: zmq.Context, tmp_path: Path) -> None:
    with spooling_publisher(context, tmp_path / "events.jsonl", catchup_max_events=7) as publisher:
        sequencer = EventSequencer()
        publish_numbered(publisher, sequencer, 30)
        assert publisher.catchup_endpoint is not None
        client = CatchupClient(publisher.catchup_endpoint, context=context, timeout_s=DEADLINE_S)
        try:
            after, replies, seen = 12, 0, []
            while True:
                reply = client.fetch(None, after, limit=1000)  # the server caps it at 7
                replies += 1
                assert len(reply.events) <= 7
                assert (reply.stream, reply.first, reply.last) == (publisher.stream, 1, 30)
                seen += [event["sequence"] for event in reply.events]
                if not reply.more:
                    break
                after = seen[-1]
            assert seen == list(range(13, 31)) and replies == 3
            assert all(event["stream"] == publisher.stream for event in reply.events)
            header_only = client.fetch(publisher.stream, 0, limit=0)
            assert header_only.events == [] and header_only.last == 30
            with pytest.raises(UnknownStreamError) as info:
                client.fetch(str(uuid.uuid4()), 0)
            assert info.value.server_stream == publisher.stream
        finally:
            client.close()


def test_catch_up_reads_across_rotated_files(context: zmq.Context, tmp_path: Path) -> None:
    spool = tmp_path / "events.jsonl"
    with spooling_publisher(context, spool, spool_max_bytes=2048, spool_backups=100) as publisher:
        sequencer = EventSequencer()
        publish_numbered(publisher, sequencer, 120)
        assert len(list(tmp_path.glob("events.jsonl.*"))) > 10
        assert publisher.spool is not None
        files = publisher.spool.open_files()
        try:
            for after in (0, 1, 2, 37, 58, 59, 118, 119, 120, 500):
                events, more = read_events_after(files, publisher.stream, after, limit=1000)
                assert [json.loads(e)["sequence"] for e in events] == list(range(after + 1, 121))
                assert not more
            events, more = read_events_after(files, publisher.stream, 50, limit=5)
            assert [json.loads(e)["sequence"] for e in events] == [51, 52, 53, 54, 55] and more
            events, _ = read_events_after(files, publisher.stream, 0, limit=100, max_bytes=1)
            assert len(events) == 1  # over the byte bound, but never an empty reply
        finally:
            for file in files:
                file.close()


def test_an_unanswered_request_is_an_error_not_a_hang(context: zmq.Context) -> None:
    client = CatchupClient("tcp://127.0.0.1:9", context=context, timeout_s=0.2)
    try:
        with pytest.raises(CatchupError, match="no catch-up reply from tcp://127.0.0.1:9"):
            client.fetch(None, 0)
    finally:
        client.close()


def test_catchup_needs_a_spool_and_its_own_endpoint() -> None:
    with pytest.raises(ValueError, match="needs spool_path"):
        PublisherConfig(catchup_endpoint="tcp://127.0.0.1:5556")
    with pytest.raises(ValueError, match="must differ from endpoint"):
        PublisherConfig(spool_path=Path("/tmp/x"), catchup_endpoint="tcp://127.0.0.1:5555")


def _subscribe_in_thread(**arguments: Any) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(subscribe_command(**arguments)))
    thread.start()
    return thread, result


def test_subscribe_since_catches_up_then_follows_live_each_event_once(
    context: zmq.Context, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with spooling_publisher(context, tmp_path / "events.jsonl") as publisher:
        sequencer = EventSequencer()
        publish_numbered(publisher, sequencer, 40)  # before the subscriber: only in the spool
        assert publisher.catchup_endpoint is not None
        wanted = 120  # events 11..130: 30 from the spool, then live ones
        thread, result = _subscribe_in_thread(
            endpoint=publisher.endpoint, camera_id=None, pretty=False, max_events=wanted,
            timeout_s=DEADLINE_S * 3, since=10, catchup=publisher.catchup_endpoint,
            idle_check_s=0.5,
        )
        # Live events flow all along: during the catch-up, and until the subscriber has them all.
        while thread.is_alive():
            if sequencer.last < 10 + wanted:
                publish_numbered(publisher, sequencer, 1)
            thread.join(timeout=0.01)
    assert result == [0]
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [event["sequence"] for event in printed] == list(range(11, 11 + wanted))
    assert {event["stream"] for event in printed} == {publisher.stream}


def test_subscribe_since_filters_cameras_after_ordering(
    context: zmq.Context, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with spooling_publisher(context, tmp_path / "events.jsonl") as publisher:
        sequencer = EventSequencer()
        for n in range(20):
            publisher.publish(make_event(sequencer.next(), "cam1" if n % 2 else "cam2"))
        assert publisher.catchup_endpoint is not None
        code = subscribe_command(publisher.endpoint, "cam1", False, max_events=10, timeout_s=DEADLINE_S,
                                 since=0, catchup=publisher.catchup_endpoint)
    assert code == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [event["sequence"] for event in printed] == list(range(2, 21, 2))


def test_events_both_caught_up_and_received_live_come_once(context: zmq.Context, tmp_path: Path) -> None:
    with spooling_publisher(context, tmp_path / "events.jsonl") as publisher:
        assert publisher.catchup_endpoint is not None
        subscriber = EventSubscriber(publisher.endpoint, context=context)
        sequencer = EventSequencer()
        while subscriber.recv(0.05) is None:  # connected once one arrives
            publish_numbered(publisher, sequencer, 1)
        publish_numbered(publisher, sequencer, 10)  # queued live, and in the spool
        client = CatchupClient(publisher.catchup_endpoint, context=context, timeout_s=DEADLINE_S)
        feed = GaplessFeed(subscriber, client, since=0, idle_check_s=3600)
        feed.start()  # catches up everything, the 10 queued ones included
        publish_numbered(publisher, sequencer, 1)
        delivered = []
        while not delivered or delivered[-1]["sequence"] < sequencer.last:
            event = feed.recv(DEADLINE_S)
            assert event is not None
            delivered.append(event)
        client.close()
        subscriber.stop()
    assert [event["sequence"] for event in delivered] == list(range(1, sequencer.last + 1))
    assert feed.duplicates_dropped == 10 and feed.events_caught_up == sequencer.last - 1


def test_a_hole_in_the_live_feed_is_filled_from_the_spool(context: zmq.Context, tmp_path: Path) -> None:
    with spooling_publisher(context, tmp_path / "events.jsonl") as publisher:
        assert publisher.catchup_endpoint is not None and publisher.spool is not None
        subscriber = EventSubscriber(publisher.endpoint, context=context)
        client = CatchupClient(publisher.catchup_endpoint, context=context, timeout_s=DEADLINE_S)
        # No quiet-time polling: only a hole seen live can bring the missing events.
        feed = GaplessFeed(subscriber, client, since=0, idle_check_s=3600)
        feed.start()  # the spool is empty: nothing caught up yet
        sequencer = EventSequencer()
        delivered: list[dict[str, Any]] = []

        def take_ready() -> None:
            while (event := feed.recv(0.02)) is not None:
                delivered.append(event)

        # Live until the subscriber is surely connected (what it missed meanwhile is a hole too).
        while not delivered:
            publish_numbered(publisher, sequencer, 1)
            take_ready()
        # Two events spooled but never sent: what a subscriber misses when its queue is full.
        skipped = [make_event(sequencer.next()), make_event(sequencer.next())]
        for event in skipped:
            publisher.spool.append(json.dumps(
                {"schema_version": "1.1", "event_id": event.event_id, "stream": publisher.stream,
                 "sequence": event.sequence, "camera_id": "cam1"}).encode())
        last = sequencer.last + 5
        while not delivered or delivered[-1]["sequence"] < last:
            if sequencer.last < last:
                publish_numbered(publisher, sequencer, 1)
            take_ready()
        client.close()
        subscriber.stop()
    assert [event["sequence"] for event in delivered] == list(range(1, last + 1))
    assert {e["event_id"] for e in delivered} >= {e.event_id for e in skipped}
    assert feed.events_caught_up >= len(skipped)


def test_a_restarted_daemon_is_caught_up_across_the_restart(
    context: zmq.Context, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = tmp_path / "events.jsonl"
    with spooling_publisher(context, spool) as first:
        sequencer = EventSequencer()
        publish_numbered(first, sequencer, 8)
        stream = first.stream
    with spooling_publisher(context, spool) as second:  # the restart: same spool, same stream
        sequencer = EventSequencer()
        sequencer.advance_to(second.next_sequence)
        publish_numbered(second, sequencer, 4)
        assert second.stream == stream and second.catchup_endpoint is not None
        code = subscribe_command(second.endpoint, None, False, max_events=7, timeout_s=DEADLINE_S,
                                 since=5, stream=stream, catchup=second.catchup_endpoint)
    assert code == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [event["sequence"] for event in printed] == list(range(6, 13))


def test_subscribe_since_with_an_emptied_spool_follows_the_new_stream(
    context: zmq.Context, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with spooling_publisher(context, tmp_path / "events.jsonl") as publisher:
        sequencer = EventSequencer()
        publish_numbered(publisher, sequencer, 3)
        assert publisher.catchup_endpoint is not None
        gone = str(uuid.uuid4())  # a stream whose spool was deleted
        code = subscribe_command(publisher.endpoint, None, False, max_events=3, timeout_s=DEADLINE_S,
                                 since=100, stream=gone, catchup=publisher.catchup_endpoint)
    assert code == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["sequence"] for line in captured.out.splitlines()] == [1, 2, 3]
    assert f"stream {gone} is no longer in the daemon's spool" in captured.err


def test_subscribe_option_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert subscribe_command("tcp://127.0.0.1:9", None, False, 1, 0.1, since=3) == 2
    assert subscribe_command("tcp://127.0.0.1:9", None, False, 1, 0.1,
                             catchup="tcp://127.0.0.1:99999") == 2
    assert subscribe_command("tcp://127.0.0.1:9", None, False, 1, 0.1, stream=str(uuid.uuid4()),
                             catchup="tcp://127.0.0.1:10") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3
    assert "--since and --stream need --catchup" in err[0] and "99999" in err[1]
    assert "--stream needs --since N" in err[2]


def test_spool_retention_by_age_on_start(tmp_path: Path) -> None:
    import os
    import time

    spool = tmp_path / "events.jsonl"
    for index, age_s in ((1, 10), (2, 5000), (3, 9000), (12, 1)):
        path = spool.with_name(f"events.jsonl.{index}")
        path.write_text('{"sequence":1}\n')
        os.utime(path, (time.time() - age_s, time.time() - age_s))
    EventSpool(spool, max_bytes=1 << 20, backups=10, max_age_s=3600).close()
    # .2 and .3 are past the age, .12 past spool_backups; the live file always stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl", "events.jsonl.1"]


def test_the_search_in_a_large_file_finds_every_start(tmp_path: Path) -> None:
    stream = str(uuid.uuid4())
    path = tmp_path / "events.jsonl"
    lines = []
    for n in range(1, 1001):
        lines.append(json.dumps({"stream": stream, "sequence": n, "pad": "x" * (n % 97)}))
        if n % 250 == 0:
            lines.append("not json")  # a damaged line is skipped, not fatal
    path.write_text("\n".join(lines) + '\n{"stream": "' + stream + '", "seq')  # a line being written
    with path.open("rb") as file:
        for after in [*range(0, 12), *range(240, 260), 499, 500, 501, *range(990, 1003)]:
            events, more = read_events_after([file], stream, after, limit=5)
            expected = list(range(after + 1, min(after + 6, 1001)))
            assert [json.loads(e)["sequence"] for e in events] == expected, after
            assert more == (after + 5 < 1000)
