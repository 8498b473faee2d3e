"""Catch-up: events a subscriber missed, served from the spool over ZeroMQ.

The live feed (PUB) drops what a subscriber was not there for; the spool has every published
event. `CatchupServer` binds a ROUTER socket (``publisher.catchup_endpoint``) and answers
"events of stream S after sequence N" from the spool files; `CatchupClient` asks (DEALER, so a
lost reply never wedges it as REQ would). `anprd.subscriber.GaplessFeed` combines both with the
live feed.

Protocol (version 1). A request is one JSON frame (after the empty delimiter frame, as REQ sends)::

    {"v": 1, "id": 7, "stream": "<uuid>" or null, "after": 41, "limit": 1000}

``stream`` null means the stream the server publishes now; ``limit`` 0 asks for the header only.
The reply is a header frame then one frame per event, each exactly the spooled JSON line (the
bytes a live subscriber got)::

    {"v": 1, "id": 7, "stream": "<uuid>", "first": 1, "last": 90, "more": true}

``first``/``last`` are the first and last sequence the spool holds now (null when empty);
``more`` is true when the reply stopped at its limit. An error reply has ``"error"`` instead
(``unknown stream``: the spool no longer holds that stream; ``bad request``). Replies are bounded
by ``publisher.catchup_max_events`` and by `MAX_REPLY_BYTES`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import zmq

from anprd.curve import CurveClientKeys, CurveServer
from anprd.errors import AnprdError

__all__ = [
    "MAX_REPLY_BYTES",
    "PROTOCOL_VERSION",
    "CatchupClient",
    "CatchupError",
    "CatchupReply",
    "CatchupServer",
    "UnknownStreamError",
    "last_event_in",
    "read_events_after",
]

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
#: A reply stops adding events past this size (events with crops can be ~100 kB each); it always
#: holds at least one event, so the client moves on.
MAX_REPLY_BYTES = 8 * 1024 * 1024
_POLL_MS = 200  # how often the server thread looks at its stop flag


class CatchupError(AnprdError):
    """No usable reply from a catch-up endpoint (unreachable, CURVE refused, or an error)."""


class UnknownStreamError(CatchupError):
    """The server's spool does not hold the stream asked for; `server_stream` is the one it has."""

    def __init__(self, message: str, server_stream: str) -> None:
        super().__init__(message)
        self.server_stream = server_stream


# --- reading the spool ----------------------------------------------------------------------


def _sequence_of(line: bytes) -> int | None:
    """The ``sequence`` of one spooled JSON line, or None if the line is not an event."""
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    sequence = record.get("sequence") if isinstance(record, dict) else None
    return sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None


def _line_at(file: IO[bytes], offset: int, size: int) -> bytes:
    file.seek(offset)
    return file.readline(max(0, size - offset))


def _next_line_start(file: IO[bytes], offset: int, size: int) -> int:
    """The first line start at or after `offset` (`size` if none)."""
    if offset == 0:
        return 0
    file.seek(offset - 1)
    while True:  # the previous byte is a newline, or find the next one
        chunk = file.read(min(65536, size - file.tell()))
        if not chunk:
            return size
        newline = chunk.find(b"\n")
        if newline >= 0:
            return file.tell() - len(chunk) + newline + 1


def _offset_after(file: IO[bytes], size: int, after: int) -> int:
    """Byte offset of the first line whose sequence is greater than `after` (`size` if none).

    Sequences only grow within a spool (they continue across restarts and rotations), so this is
    a binary search over byte offsets: a catch-up from deep in a 64 MB file reads a few lines,
    not the whole file. A line that is not an event (damaged) is judged by the next event line
    after it; readers skip such lines anyway.
    """
    low, high = 0, size  # low: a line start, every event before it <= after; high: > after or end
    while low < high:
        start = _next_line_start(file, (low + high) // 2, size)
        if start >= high:  # no line starts in the upper half: look at the line at low
            start = low
        probe, sequence = start, None
        while probe < high and sequence is None:  # the first event line from `start` on
            line = _line_at(file, probe, size)
            sequence = _sequence_of(line)
            probe += len(line)
        if sequence is None or sequence > after:
            high = start  # from start to high: no event, or the first is after
        else:
            low = probe  # up to the end of that event line: none after
    return low


def read_events_after(
    files: Sequence[IO[bytes]],
    stream: str,
    after: int,
    limit: int,
    max_bytes: int = MAX_REPLY_BYTES,
) -> tuple[list[bytes], bool]:
    """Spooled events of `stream` with sequence > `after`, oldest first.

    Parameters
    ----------
    files
        The spool's files, oldest first, opened for reading (see `EventSpool.open_files`).
    stream
        Only events of this stream.
    after
        Only events with a greater sequence.
    limit
        At most this many events.
    max_bytes
        Stop adding events past this many bytes (at least one event is returned).

    Returns
    -------
    tuple[list[bytes], bool]
        The events' JSON lines (no newline), and whether more may follow (a limit was reached).
    """
    found: list[bytes] = []
    size_so_far = 0
    for file in files:
        size = os.fstat(file.fileno()).st_size
        offset = _offset_after(file, size, after)
        file.seek(offset)
        while offset < size:
            line = file.readline(size - offset)
            offset += len(line)
            if not line.endswith(b"\n"):  # being appended right now; the next request gets it
                break
            record = line[:-1]
            try:
                event = json.loads(record)
            except (UnicodeDecodeError, json.JSONDecodeError):
                logger.warning("event spool: skipped a line that is not JSON (%d bytes)", len(line))
                continue
            if not isinstance(event, dict) or event.get("stream") != stream:
                continue  # a version 1.0 event, from before streams
            sequence = event.get("sequence")
            if not isinstance(sequence, int) or sequence <= after:
                continue
            if len(found) >= limit or (found and size_so_far + len(record) > max_bytes):
                return found, True
            found.append(record)
            size_so_far += len(record)
    return found, False


def _bounds(files: Sequence[IO[bytes]]) -> tuple[int | None, int | None]:
    """First and last sequence in the spool files (oldest first), None when they hold none."""
    first = last = None
    for file in files:
        size = os.fstat(file.fileno()).st_size
        start = 0
        while first is None and start < size:
            line = _line_at(file, start, size)
            if not line.endswith(b"\n"):
                break
            first = _sequence_of(line)
            start += len(line)
    for file in reversed(files):
        for line in _lines_backwards(file):
            last = _sequence_of(line)
            if last is not None:
                return first, last
    return first, last


def _lines_backwards(file: IO[bytes]) -> Iterator[bytes]:
    """Whole lines (ending in a newline) of `file`, last first; an unfinished last line (being
    appended, or cut by a crash) is skipped."""
    position = os.fstat(file.fileno()).st_size
    data = b""  # file bytes from `position` on, up to the end of the last whole line once found
    found_end = False
    while True:
        if not found_end:
            cut = data.rfind(b"\n")
            if cut >= 0:
                data, found_end = data[: cut + 1], True
        if found_end:
            newline = data.rfind(b"\n", 0, len(data) - 1)  # the end of the line before the last
            if newline >= 0:
                yield data[newline + 1 :]
                data = data[: newline + 1]
                continue
            if position == 0:
                if data:
                    yield data
                return
        elif position == 0:
            return
        start = max(0, position - 65536)
        file.seek(start)
        data = file.read(position - start) + data
        position = start


def last_event_in(files: Sequence[IO[bytes]]) -> dict[str, Any] | None:
    """The last whole event line of the spool files (oldest first), parsed; None if none."""
    for file in reversed(files):
        for line in _lines_backwards(file):
            if _sequence_of(line) is not None:
                record = json.loads(line)
                assert isinstance(record, dict)
                return record
            logger.warning("event spool: skipped a line that is not an event (%d bytes)", len(line))
    return None


# --- server ---------------------------------------------------------------------------------


class CatchupServer:
    """Answers catch-up requests from the spool on a ROUTER socket, on a thread of its own.

    Parameters
    ----------
    endpoint
        Where to bind.
    open_files
        Opens the spool's files, oldest first (`EventSpool.open_files`); called per request, so
        rotation between requests is harmless.
    stream
        The stream the publisher numbers now.
    max_events
        Most events per reply.
    context
        ZeroMQ context.
    curve
        Make the socket a CURVE server with these keys; None: plain.

    Raises
    ------
    zmq.ZMQError
        If the endpoint cannot be bound.
    """

    def __init__(
        self,
        endpoint: str,
        open_files: Callable[[], list[IO[bytes]]],
        stream: str,
        *,
        max_events: int,
        context: zmq.Context,
        curve: CurveServer | None = None,
    ) -> None:
        self._open_files = open_files
        self._stream = stream
        self._max_events = max_events
        self._stop = threading.Event()
        socket = context.socket(zmq.ROUTER)
        try:
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a vanished client: an error, not a hang
            socket.setsockopt(zmq.SNDTIMEO, 1000)
            if curve is not None:
                curve.apply(socket)
            socket.bind(endpoint)
        except zmq.ZMQError:
            socket.close(linger=0)
            raise
        self._socket = socket
        self.endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT) or endpoint
        self.requests_served = 0
        # The socket is handed to the thread here and used by it alone from now on.
        self._thread = threading.Thread(target=self._serve, name="catchup", daemon=True)
        self._thread.start()
        logger.info("serving catch-up on %s", self.endpoint)

    def _serve(self) -> None:
        socket = self._socket
        try:
            while not self._stop.is_set():
                if not socket.poll(_POLL_MS, zmq.POLLIN):
                    continue
                frames = socket.recv_multipart(zmq.NOBLOCK)
                try:
                    reply = self._answer(frames)
                except Exception:  # a bug here must not end catch-up for every later client
                    logger.exception("catch-up request failed")
                    continue
                try:
                    socket.send_multipart(reply)
                except zmq.ZMQError as exc:  # the client went away (or never reads)
                    logger.debug("catch-up reply not sent: %s", exc)
                self.requests_served += 1
        finally:
            socket.close(linger=0)

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        # [identity, b"", request] from REQ or from CatchupClient's DEALER
        if len(frames) < 3 or frames[-2] != b"":
            return [*frames[:1], b"", _json({"v": PROTOCOL_VERSION, "error": "bad request"})]
        envelope = frames[:-1]
        request = _parse_request(frames[-1])
        if request is None:
            return [*envelope, _json({"v": PROTOCOL_VERSION, "error": "bad request"})]
        header: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": request["id"]}
        stream = request["stream"] if request["stream"] is not None else self._stream
        files = self._open_files()
        try:
            if stream != self._stream:
                # A spool holds one stream: it changes only when the spool was empty.
                return [*envelope, _json({**header, "error": "unknown stream",
                                          "stream": self._stream})]
            first, last = _bounds(files)
            limit = min(request["limit"], self._max_events)
            events, more = (
                read_events_after(files, stream, request["after"], limit) if limit else ([], False)
            )
        finally:
            for file in files:
                file.close()
        header.update(stream=stream, first=first, last=last, more=more)
        return [*envelope, _json(header), *events]

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent."""
        self._stop.set()
        self._thread.join()


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _parse_request(data: bytes) -> dict[str, Any] | None:
    try:
        request = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(request, dict) or request.get("v") != PROTOCOL_VERSION:
        return None
    stream, after, limit = request.get("stream"), request.get("after"), request.get("limit")
    if stream is not None and not isinstance(stream, str):
        return None
    for number in (after, limit):
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            return None
    return {"id": request.get("id"), "stream": stream, "after": after, "limit": limit}


# --- client ---------------------------------------------------------------------------------


@dataclass
class CatchupReply:
    """One catch-up reply: the stream, the spool's bounds, and the events (decoded JSON)."""

    stream: str
    first: int | None
    last: int | None
    more: bool
    events: list[dict[str, Any]] = field(default_factory=list)


class CatchupClient:
    """Asks a `CatchupServer` for missed events.

    Parameters
    ----------
    endpoint
        The server's endpoint.
    context
        ZeroMQ context; default the process-wide one.
    curve
        CURVE client keys when the server uses CURVE.
    timeout_s
        How long one request waits for its reply.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        context: zmq.Context | None = None,
        curve: CurveClientKeys | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self._endpoint = endpoint
        self._context = context or zmq.Context.instance()
        self._curve = curve
        self._timeout_ms = max(1, round(timeout_s * 1000))
        self._ids = itertools.count(1)
        self._socket: zmq.Socket | None = None
        self._connect()  # a malformed endpoint fails here, at once

    def _connect(self) -> None:
        socket = self._context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        # A DEALER with no live connection blocks on send; a server that refused this client's
        # CURVE handshake (or plain text to a CURVE server) drops the connection at once.
        socket.setsockopt(zmq.SNDTIMEO, self._timeout_ms)
        if self._curve is not None:
            self._curve.apply(socket)
        try:
            socket.connect(self._endpoint)
        except zmq.ZMQError:
            socket.close(linger=0)
            raise
        self._socket = socket

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def fetch(self, stream: str | None, after: int, limit: int = 1000) -> CatchupReply:
        """Events of `stream` (None: the server's current one) after `after`, up to `limit`.

        Raises
        ------
        CatchupError
            No reply in time (the server is down, or refused this client's CURVE key), or an
            error reply (``unknown stream``: the server's stream is in the message).
        """
        if self._socket is None:
            raise RuntimeError("catch-up client is closed")
        request_id = next(self._ids)
        request = {"v": PROTOCOL_VERSION, "id": request_id, "stream": stream, "after": after,
                   "limit": limit}
        try:
            self._socket.send_multipart([b"", _json(request)])
            sent = True
        except zmq.Again:
            sent = False
        while True:
            if not sent or not self._socket.poll(self._timeout_ms, zmq.POLLIN):
                # Start afresh: a late reply to this request must not be taken for the next one's.
                self._socket.close(linger=0)
                self._connect()
                raise CatchupError(
                    f"no catch-up reply from {self._endpoint} within {self._timeout_ms / 1000:g} s "
                    "(is the daemon's publisher.catchup_endpoint there? with CURVE, is this "
                    "client's key allowed?)"
                )
            frames = self._socket.recv_multipart()
            try:
                header = json.loads(frames[1])
            except (IndexError, UnicodeDecodeError, json.JSONDecodeError):
                raise CatchupError(f"malformed catch-up reply from {self._endpoint}") from None
            if not isinstance(header, dict):
                raise CatchupError(f"malformed catch-up reply from {self._endpoint}")
            if header.get("id") != request_id:
                continue  # the late reply to an earlier request
            break
        if "error" in header:
            message = f"catch-up from {self._endpoint}: {header['error']}"
            if header["error"] == "unknown stream" and isinstance(header.get("stream"), str):
                raise UnknownStreamError(f"{message} (it serves stream {header['stream']})",
                                         header["stream"])
            raise CatchupError(message)
        try:
            events = [json.loads(frame) for frame in frames[2:]]
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CatchupError(f"malformed event in a catch-up reply from {self._endpoint}") from None
        return CatchupReply(str(header["stream"]), header.get("first"), header.get("last"),
                            bool(header.get("more")), events)

    def close(self) -> None:
        """Close the socket; idempotent."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
