"""Event subscriber: receives plate events from an `anprd.publisher.EventPublisher`.

ZeroMQ subscriptions match topic *prefixes*, so ``plate.cam1`` would also receive ``plate.cam10``;
`EventSubscriber` therefore also checks the topic exactly. `GaplessFeed` puts the live feed in
order with a catch-up endpoint (`anprd.catchup`): every event of the daemon's stream exactly once,
with no holes, from a given sequence on. `subscribe_command` backs the CLI's ``anprd subscribe``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import zmq

from anprd.catchup import CatchupClient, CatchupError, UnknownStreamError
from anprd.config.publisher import check_tcp_port
from anprd.curve import CurveClientKeys, CurveError
from anprd.publisher import Topic, topic_for

__all__ = ["EventDecodeError", "EventSubscriber", "GaplessFeed", "subscribe_command"]

logger = logging.getLogger(__name__)

_POLL_SLICE_S = 0.5  # longest single wait, so Ctrl-C is handled promptly


class EventDecodeError(ValueError):
    """A message on the socket was not a ``[topic, JSON object]`` plate event."""


class EventSubscriber:
    """SUB socket connected to a publisher, filtered to one camera or all.

    Parameters
    ----------
    endpoint
        The publisher's endpoint (tcp://host:port, ipc:///path).
    camera_id
        Only this camera's events; None: every camera.
    context
        ZeroMQ context; default: the process-wide ``zmq.Context.instance()`` (never terminated).
    rcvhwm
        Receive high-water mark (0 = unlimited); high so bursts are not dropped.
    curve
        CURVE client keys when the publisher (or proxy) uses CURVE; None: plain.

    Raises
    ------
    zmq.ZMQError
        If the endpoint is malformed.
    """

    def __init__(
        self,
        endpoint: str,
        camera_id: str | None = None,
        *,
        context: zmq.Context | None = None,
        rcvhwm: int = 100_000,
        curve: CurveClientKeys | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._topic = topic_for(camera_id) if camera_id is not None else None
        socket = (context or zmq.Context.instance()).socket(zmq.SUB)
        socket.setsockopt(zmq.RCVHWM, rcvhwm)
        socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.apply(socket)
        try:
            socket.connect(endpoint)
        except zmq.ZMQError:
            socket.close(linger=0)
            raise
        prefix = self._topic if self._topic is not None else f"{Topic.PLATE.value}."
        socket.setsockopt_string(zmq.SUBSCRIBE, prefix)
        self._socket: zmq.Socket | None = socket

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def recv(self, timeout_s: float) -> dict[str, Any] | None:
        """The next event as a dict, or None if none arrived within `timeout_s` seconds.

        Raises
        ------
        EventDecodeError
            If a message is not a valid ``[topic, JSON object]`` pair (it is consumed).
        """
        if self._socket is None:
            raise RuntimeError("subscriber is stopped")
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            remaining = deadline - time.monotonic()
            if not self._socket.poll(timeout=max(0, round(remaining * 1000)), flags=zmq.POLLIN):
                return None
            parts = self._socket.recv_multipart(flags=zmq.NOBLOCK)
            if len(parts) != 2:
                raise EventDecodeError(f"expected [topic, event], got {len(parts)} parts")
            topic, data = parts
            if self._topic is not None and topic != self._topic.encode("utf-8"):
                # Prefix match only: plate.cam1 also receives plate.cam10. Check the deadline
                # here too, or a flood of such messages would keep us past it.
                if time.monotonic() >= deadline:
                    return None
                continue
            try:
                event = json.loads(data)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise EventDecodeError(f"event on {topic!r} is not JSON: {exc}") from exc
            if not isinstance(event, dict):
                raise EventDecodeError(f"event on {topic!r} is not a JSON object")
            return event

    def stop(self) -> None:
        """Close the socket; idempotent."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class GaplessFeed:
    """Live events put in order per stream, each once, holes filled from a catch-up endpoint.

    Events of the stream the catch-up endpoint serves come out in sequence order with none
    missing: a live event that is not the next one makes the feed fetch the ones between first;
    one already delivered (caught up, then also received live) is dropped. When no live event
    came for `idle_check_s`, the feed asks for anything newer, so the last events before a quiet
    spell are not held back until the next one. Events of other streams (other daemons behind a
    proxy) come out in order, once, and a hole in them is reported, since this endpoint cannot fill
    it. Events without a stream (schema 1.0) pass through as they come.

    Parameters
    ----------
    subscriber
        The live feed: every camera (the numbering is across cameras; filter afterwards).
    catchup
        The daemon's catch-up endpoint.
    since
        Deliver the served stream's events after this sequence (0: all the spool holds), first
        from catch-up; None: from the first live event on (catch-up only fills holes).
    stream
        The stream `since` refers to; None: the one the endpoint serves now. If the endpoint no
        longer has it (its spool was emptied), the feed warns and follows the current stream
        from its start.
    idle_check_s
        Quiet time after which the endpoint is asked for newer events.
    warn
        Called with a one-line message about a hole that cannot be filled or a stream change.
    """

    def __init__(
        self,
        subscriber: EventSubscriber,
        catchup: CatchupClient,
        *,
        since: int | None = None,
        stream: str | None = None,
        idle_check_s: float = 5.0,
        warn: Callable[[str], None] = logger.warning,
    ) -> None:
        self._subscriber = subscriber
        self._catchup = catchup
        self._since = since
        self._start_stream = stream
        self._idle_check_s = idle_check_s
        self._warn = warn
        self._served: str | None = None  # the stream the catch-up endpoint serves
        self._last: dict[str, int] = {}  # per stream, the last sequence delivered
        self._ready: deque[dict[str, Any]] = deque()
        self._started = False
        self._quiet_since = time.monotonic()
        self.events_caught_up = 0  # delivered from catch-up rather than live
        self.duplicates_dropped = 0

    def start(self) -> None:
        """Learn the served stream and fetch what `since` asks for (done by the first `recv`).

        Raises
        ------
        CatchupError
            The endpoint did not answer.
        """
        if self._started:
            return
        self._started = True
        if self._since is None:
            self._served = self._catchup.fetch(None, 0, limit=0).stream
            return
        try:
            reply = self._catchup.fetch(self._start_stream, self._since, limit=0)
            self._served, after = reply.stream, self._since
        except UnknownStreamError as exc:
            self._warn(f"stream {self._start_stream} is no longer in the daemon's spool (it was "
                       f"emptied or deleted): following its stream {exc.server_stream} from the "
                       "start")
            self._served, after = exc.server_stream, 0
        self._last[self._served] = after
        self._fill(self._served, until=None)

    def recv(self, timeout_s: float) -> dict[str, Any] | None:
        """The next event in order, or None if none is ready within `timeout_s` seconds.

        Raises
        ------
        EventDecodeError
            A live message was not an event (it is skipped).
        CatchupError
            Only from the first call (`start`); later the feed warns and goes on live.
        """
        self.start()
        deadline = time.monotonic() + max(0.0, timeout_s)
        while not self._ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            event = self._subscriber.recv(min(remaining, self._idle_check_s))
            if event is not None:
                self._quiet_since = time.monotonic()
                self._take_live(event)
            elif time.monotonic() - self._quiet_since >= self._idle_check_s:
                self._quiet_since = time.monotonic()
                if self._served is not None and self._served in self._last:
                    self._fill(self._served, until=None)
        return self._ready.popleft()

    def _take_live(self, event: dict[str, Any]) -> None:
        stream, sequence = event.get("stream"), event.get("sequence")
        if not isinstance(stream, str) or not isinstance(sequence, int):
            self._ready.append(event)  # from a publisher before streams: nothing to order by
            return
        last = self._last.get(stream)
        if last is None:
            last = self._last[stream] = self._first_sight(stream, sequence)
        if sequence <= last:
            self.duplicates_dropped += 1
            return
        if sequence > last + 1:
            if stream == self._served:
                self._fill(stream, until=sequence - 1)
                last = self._last[stream]
            if sequence > last + 1:
                why = ("not in the daemon's spool" if stream == self._served
                       else "no catch-up endpoint for this stream")
                self._warn(f"stream {stream}: missed events {last + 1}..{sequence - 1} ({why})")
        self._ready.append(event)
        self._last[stream] = sequence

    def _first_sight(self, stream: str, sequence: int) -> int:
        """The sequence to deliver after for a stream seen live for the first time."""
        if stream != self._served:
            try:  # the daemon may have started a new stream (its spool was emptied)
                self._served = self._catchup.fetch(None, 0, limit=0).stream
            except CatchupError as exc:
                self._warn(f"catch-up: {exc}")
        if stream == self._served and self._since is not None and self._last:
            # A stream begun after this feed started: every event of it is new to us.
            self._warn(f"the daemon started a new stream {stream}: following it from its start")
            return 0
        return sequence - 1

    def _fill(self, stream: str, until: int | None) -> None:
        """Fetch `stream`'s events after the last delivered, up to `until` (None: all there are)."""
        while until is None or self._last[stream] < until:
            try:
                reply = self._catchup.fetch(stream, self._last[stream])
            except CatchupError as exc:
                self._warn(f"catch-up: {exc}")
                return
            for event in reply.events:
                sequence = event.get("sequence")
                if not isinstance(sequence, int) or sequence <= self._last[stream]:
                    continue
                if until is not None and sequence > until:
                    return  # the live event and what follows come live
                if sequence > self._last[stream] + 1:
                    self._warn(f"stream {stream}: missed events {self._last[stream] + 1}.."
                               f"{sequence - 1} (not in the daemon's spool any more)")
                self._ready.append(event)
                self._last[stream] = sequence
                self.events_caught_up += 1
            if not reply.more:
                return


def _print_event(event: dict[str, Any], pretty: bool) -> bool:
    """Print one event; False when stdout is gone (e.g. piped into head)."""
    text = json.dumps(event, indent=2 if pretty else None, ensure_ascii=False)
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Reader went away: quiet exit, no traceback at shutdown.
        sys.stdout = open(  # noqa: SIM115 - replaces the broken stream for interpreter exit
            "/dev/null", "w"
        )
        return False
    return True


def subscribe_command(
    endpoint: str,
    camera_id: str | None,
    pretty: bool,
    max_events: int | None,
    timeout_s: float | None,
    *,
    since: int | None = None,
    stream: str | None = None,
    catchup: str | None = None,
    curve_server_key: Path | None = None,
    curve_client_key: Path | None = None,
    idle_check_s: float = 5.0,
) -> int:
    """Print events from `endpoint` to stdout, one JSON per line (indented when `pretty`).

    Stops after `max_events` events or `timeout_s` seconds in all (None: no limit), or on Ctrl-C.
    Malformed messages are reported on stderr and skipped. With `catchup` (the daemon's catch-up
    endpoint) events come in order with holes filled (`GaplessFeed`), from after `since` when
    given; `curve_server_key` and `curve_client_key` (both or neither) turn CURVE on, for the
    live and the catch-up endpoint.

    Returns
    -------
    int
        0: stopped after max_events or the timeout (with max_events None), or stdout closed;
        1: timed out before max_events events; 2: bad endpoint, option or key file, or the
        catch-up endpoint did not answer at start; 130: interrupted.
    """
    def fail(message: str) -> int:
        print(f"anprd subscribe: {message}", file=sys.stderr)
        return 2

    for where in (endpoint, catchup):
        if where is None:
            continue
        try:
            check_tcp_port(where)
        except ValueError as exc:
            return fail(f"{where}: {exc}")
    if (since is not None or stream is not None) and catchup is None:
        return fail("--since and --stream need --catchup ENDPOINT (the daemon's "
                    "publisher.catchup_endpoint)")
    if stream is not None and since is None:
        return fail("--stream needs --since N (the sequence in that stream to start after)")
    if (curve_server_key is None) != (curve_client_key is None):
        return fail("CURVE needs both --curve-server-key and --curve-client-key")
    curve = None
    if curve_server_key is not None and curve_client_key is not None:
        try:
            curve = CurveClientKeys.from_files(curve_server_key, curve_client_key)
        except CurveError as exc:
            return fail(str(exc))
    try:
        # With catch-up, every camera is received: the sequence numbers events of all cameras.
        subscriber = EventSubscriber(endpoint, None if catchup else camera_id, curve=curve)
    except zmq.ZMQError as exc:
        return fail(f"cannot connect to {endpoint}: {exc}")
    feed: EventSubscriber | GaplessFeed = subscriber
    client = None
    try:
        if catchup is not None:
            try:
                client = CatchupClient(catchup, curve=curve)
            except zmq.ZMQError as exc:
                return fail(f"cannot connect to {catchup}: {exc}")
            feed = GaplessFeed(subscriber, client, since=since, stream=stream,
                               idle_check_s=idle_check_s,
                               warn=lambda text: print(f"anprd subscribe: {text}", file=sys.stderr))
            try:
                feed.start()
            except CatchupError as exc:
                return fail(str(exc))
        return _print_events(feed, camera_id if catchup else None, pretty, max_events, timeout_s)
    except KeyboardInterrupt:
        return 130
    finally:
        if client is not None:
            client.close()
        subscriber.stop()


def _print_events(
    feed: EventSubscriber | GaplessFeed,
    camera_id: str | None,
    pretty: bool,
    max_events: int | None,
    timeout_s: float | None,
) -> int:
    """The printing loop of `subscribe_command`; `camera_id`: filter here (None: done already)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    received = 0
    while max_events is None or received < max_events:
        wait = _POLL_SLICE_S
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                return 0 if max_events is None else 1
        try:
            event = feed.recv(wait)
        except EventDecodeError as exc:
            print(f"anprd subscribe: skipped a message: {exc}", file=sys.stderr)
            continue
        if event is None or (camera_id is not None and event.get("camera_id") != camera_id):
            continue
        if not _print_event(event, pretty):
            return 0
        received += 1
    return 0
