"""Event publisher: ZeroMQ PUB for live consumers, plus a JSON-lines spool as the durable record.

Each event is sent as a two-part message ``[topic, JSON]``, topic ``plate.<camera_id>``
(`Topic`, `topic_for`), so subscribers can filter by camera (prefix match: see
`anprd.subscriber`, which also checks the topic exactly).

The live feed never blocks the daemon: it drops messages for subscribers that are absent or
still connecting (the "slow joiner"), and for a subscriber that does not read once
``publisher.sndhwm`` events wait for it. The socket is an XPUB with ``XPUB_NODROP``, so a queue
becoming full is seen (the send reports it) rather than silent: the event then goes to the other
subscribers as PUB would send it, and the overflow is counted (`EventPublisher.overflows`,
``anprd_subscriber_overflows_total``) and logged at most every 10 s. What is counted is each time a
subscriber's queue fills, not each event it then misses: ZeroMQ takes a full subscriber out of the
send set until it has read about half its queue, and the events sent meanwhile are dropped for it
without any sign to the sender. The subscriber sees them as a gap in ``sequence``, and
``anprd subscribe --catchup`` fills it.

The *durable* record is the spool: when ``spool_path`` is set, every event is appended to it as
one JSON line and fsync'd *before* it is sent, so an event that reached any subscriber is on
disk; the spool rotates by size to ``<spool>.1``, ``<spool>.2``, ... like logging's
RotatingFileHandler, and rotated files older than ``spool_max_age_s`` are deleted. The spool also
carries the numbering across restarts: the publisher's ``stream`` and next sequence come from its
last event (a new stream when it holds none), and ``publisher.catchup_endpoint`` serves missed
events from it (`anprd.catchup`).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import threading
import time
import uuid
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import zmq

from anprd.catchup import CatchupServer, last_event_in
from anprd.config.publisher import PublisherConfig
from anprd.curve import CurveClientKeys, CurveError, CurveServer, CurveServerKeys
from anprd.errors import AnprdError
from anprd.events import event_to_json
from anprd.types import PlateEvent

__all__ = ["EventPublisher", "EventSpool", "PublisherError", "Topic", "topic_for"]

logger = logging.getLogger(__name__)

#: The stream of a publisher without a spool: one per process, since nothing carries its
#: numbering across a restart (a publisher rebuilt by a config reload keeps it).
_PROCESS_STREAM = str(uuid.uuid4())
_OVERFLOW_LOG_INTERVAL_S = 10.0


class Topic(StrEnum):
    """Message topics; the wire topic is ``<topic>.<camera_id>``."""

    PLATE = "plate"


def topic_for(camera_id: str, topic: Topic = Topic.PLATE) -> str:
    """The wire topic of `camera_id`'s messages: ``plate.<camera_id>``."""
    return f"{topic.value}.{camera_id}"


class PublisherError(AnprdError):
    """The publisher could not bind, connect, send or write its spool."""


class EventSpool:
    """Append-only JSON-lines file, fsync'd per line, rotated by size, pruned by age.

    Parameters
    ----------
    path
        The live file; rotated files are ``path.1`` (newest) to ``path.<backups>`` (oldest).
    max_bytes
        A line that would take the file past this size goes to a fresh file.
    backups
        Rotated files kept.
    fsync
        Flush every line to disk (durable across power loss).
    max_age_s
        Rotated files last written longer ago than this are deleted, at start and at each
        rotation; None: no age limit.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        backups: int,
        fsync: bool = True,
        max_age_s: float | None = None,
    ) -> None:
        if max_bytes < 1 or backups < 1:
            raise ValueError("max_bytes and backups must be >= 1")
        self._path = Path(path)
        self._max_bytes = max_bytes
        self._backups = backups
        self._fsync = fsync
        self._max_age_s = max_age_s
        # Appends and rotation against `open_files`, which the catch-up thread calls.
        self._lock = threading.Lock()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = self._open()
        self._closed = False
        self.lines_written = 0
        self._prune()

    @property
    def path(self) -> Path:
        return self._path

    def _rotated(self, index: int) -> Path:
        return self._path.with_name(f"{self._path.name}.{index}")

    def _rotated_indices(self) -> list[int]:
        """Indices of the rotated files there now, lowest (newest) first."""
        prefix = f"{self._path.name}."
        indices = [
            int(suffix)
            for item in self._path.parent.glob(f"{glob.escape(self._path.name)}.*")
            if (suffix := item.name[len(prefix):]).isdigit()
        ]
        return sorted(indices)

    def _prune(self) -> None:
        """Delete rotated files beyond `backups` (the setting was lowered) or older than
        `max_age_s`; the live file always stays (it carries the stream and sequence on)."""
        now = time.time()
        for index in self._rotated_indices():
            path = self._rotated(index)
            try:
                too_old = self._max_age_s is not None and now - path.stat().st_mtime > self._max_age_s
                if index > self._backups or too_old:
                    path.unlink()
                    logger.info("event spool: deleted %s (%s)", path,
                                "past spool_max_age_s" if too_old else "past spool_backups")
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.error("event spool: cannot delete %s: %s", path, exc)

    def open_files(self) -> list[IO[bytes]]:
        """Every spool file opened for reading, oldest first (for catch-up and restarts).

        Opened together under the spool's lock, so a rotation cannot shift names in between; an
        open file stays readable after it is renamed or deleted.
        """
        with self._lock:
            files: list[IO[bytes]] = []
            try:
                for index in reversed(self._rotated_indices()):
                    try:
                        files.append(self._rotated(index).open("rb"))
                    except FileNotFoundError:
                        continue
                files.append(self._path.open("rb"))
            except OSError:
                for file in files:
                    file.close()
                raise
            return files

    def last_event(self) -> dict[str, object] | None:
        """The last whole event in the spool (the newest file holding one), or None."""
        files = self.open_files()
        try:
            return last_event_in(files)
        finally:
            for file in files:
                file.close()

    def _open(self) -> int:
        # Plates are personal data: a new spool file is readable by its owner only, whatever the
        # umask (systemd's unit sets 0077 too). Kept open for the spool's lifetime; unbuffered, so
        # a failed append leaves nothing behind to be written with a later one.
        fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            self._drop_partial_line(fd)
        except OSError:
            os.close(fd)
            raise
        return fd

    def _drop_partial_line(self, fd: int) -> None:
        """Cut a last line without its newline (the process died mid-append), which no JSON-lines
        reader could parse and the next record would be glued to; it was never published."""
        size = end = os.fstat(fd).st_size
        while end > 0:
            start = max(0, end - 65536)
            newline = os.pread(fd, end - start, start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            os.ftruncate(fd, end)
            logger.warning("event spool %s: dropped an unfinished last line (%d bytes)",
                           self._path, size - end)

    def append(self, line: bytes) -> None:
        """Append one line (a newline is added) and make it durable. On an error (a full disk) the
        file is cut back to its last whole line and the error raised: the event was not recorded."""
        with self._lock:
            self._append(line)

    def _append(self, line: bytes) -> None:
        if self._closed:
            raise ValueError(f"spool {self._path} is closed")
        if self._fd is None:  # a rotation could not open the new file: try again
            self._fd = self._open()
        record = line + b"\n"
        size = os.fstat(self._fd).st_size
        if size > 0 and size + len(record) > self._max_bytes:
            self._rotate()
            size = 0
        try:
            written = 0
            while written < len(record):  # a write near a full disk can be partial
                written += os.write(self._fd, record[written:])
            if self._fsync:
                os.fsync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, size)
            except OSError as exc:
                logger.error("event spool %s: cannot cut a failed append: %s", self._path, exc)
            raise
        self.lines_written += 1

    def _rotate(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        for index in range(self._backups - 1, 0, -1):
            older = self._path.with_name(f"{self._path.name}.{index}")
            if older.exists():
                older.replace(self._path.with_name(f"{self._path.name}.{index + 1}"))
        self._path.replace(self._path.with_name(f"{self._path.name}.1"))
        if self._fsync:  # make the renames durable too
            directory = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        self._fd = self._open()
        self._prune()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class EventPublisher:
    """Publishes `PlateEvent`s on a ZeroMQ XPUB socket, spooling each to disk first.

    Parameters
    ----------
    config
        Endpoint, bind or connect, high-water mark, linger, spool, catch-up and CURVE.
    context
        ZeroMQ context to use; default: the process-wide ``zmq.Context.instance()``. The publisher
        never terminates a context.

    Attributes
    ----------
    events_published
        Events sent.
    overflows
        Times a subscriber's queue was full (it then misses events until it reads again; the
        others get them).

    Raises
    ------
    PublisherError
        If a socket cannot bind or connect (e.g. address in use), a key file cannot be used, or
        the spool cannot be opened or read.
    """

    def __init__(self, config: PublisherConfig, context: zmq.Context | None = None) -> None:
        self._config = config
        self._lock = threading.Lock()  # zmq sockets are not thread-safe
        self.events_published = 0
        self.overflows = 0
        self._overflows_unlogged = 0
        self._overflow_logged_at = -float("inf")
        self._spool: EventSpool | None = None
        self._socket: zmq.Socket | None = None
        self._curve_server: CurveServer | None = None
        self._catchup: CatchupServer | None = None
        context = context or zmq.Context.instance()
        try:
            self._stream, self._last_sequence = self._open_spool()
            self._open_sockets(context)
        except BaseException:
            self._close_all(linger_ms=0)
            raise
        logger.info("publishing plate events on %s (%s), stream %s from sequence %d",
                    self._endpoint, config.mode, self._stream, self._last_sequence + 1)

    def _open_spool(self) -> tuple[str, int]:
        """Open the spool; the stream and last sequence it carries (new ones when it is empty)."""
        config = self._config
        if config.spool_path is None:
            return _PROCESS_STREAM, 0
        try:
            self._spool = EventSpool(
                config.spool_path,
                max_bytes=config.spool_max_bytes,
                backups=config.spool_backups,
                fsync=config.spool_fsync,
                max_age_s=config.spool_max_age_s,
            )
            last = self._spool.last_event()
        except OSError as exc:
            logger.error("cannot open event spool %s: %s", config.spool_path, exc)
            raise PublisherError(f"cannot open event spool {config.spool_path}: {exc}") from exc
        if last is None:
            return str(uuid.uuid4()), 0
        sequence = last["sequence"]
        assert isinstance(sequence, int)  # last_event only returns events with one
        stream = last.get("stream")
        if not isinstance(stream, str):
            # Written before streams (schema 1.0): the numbering goes on, under a stream id now.
            stream = str(uuid.uuid4())
        return stream, sequence

    def _open_sockets(self, context: zmq.Context) -> None:
        config = self._config
        curve_client: CurveClientKeys | None = None
        try:
            if config.curve_secret_key is not None:
                if config.mode == "bind" or config.catchup_endpoint is not None:
                    self._curve_server = CurveServer(context, CurveServerKeys.from_files(
                        config.curve_secret_key, config.curve_clients))
                if config.mode == "connect":
                    assert config.curve_server_key is not None  # verify_curve
                    curve_client = CurveClientKeys.from_files(
                        config.curve_server_key, config.curve_secret_key)
        except CurveError as exc:
            logger.error("publisher CURVE keys: %s", exc)
            raise PublisherError(f"publisher CURVE keys: {exc}") from exc
        try:  # making the socket fails too when the process is out of file descriptors
            self._socket = context.socket(zmq.XPUB)
            self._socket.setsockopt(zmq.SNDHWM, config.sndhwm)
            self._socket.setsockopt(zmq.LINGER, config.linger_ms)
            # A full subscriber queue makes the send fail (EAGAIN) instead of dropping silently,
            # so the drop can be counted; `publish` then sends it to the others.
            self._socket.setsockopt(zmq.XPUB_NODROP, 1)
            if config.mode == "bind":
                if self._curve_server is not None:
                    self._curve_server.apply(self._socket)
                self._socket.bind(config.endpoint)
            else:
                if curve_client is not None:
                    curve_client.apply(self._socket)
                self._socket.connect(config.endpoint)
        except zmq.ZMQError as exc:
            logger.error("cannot %s PUB socket to %s: %s", config.mode, config.endpoint, exc)
            raise PublisherError(
                f"cannot {config.mode} event publisher to {config.endpoint}: {exc}"
            ) from exc
        self._endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT) or config.endpoint
        if config.catchup_endpoint is not None and self._spool is not None:
            try:
                self._catchup = CatchupServer(
                    config.catchup_endpoint,
                    self._spool.open_files,
                    self._stream,
                    max_events=config.catchup_max_events,
                    context=context,
                    curve=self._curve_server,
                )
            except zmq.ZMQError as exc:
                logger.error("cannot bind catch-up socket to %s: %s", config.catchup_endpoint, exc)
                raise PublisherError(
                    f"cannot bind catch-up endpoint {config.catchup_endpoint}: {exc}"
                ) from exc

    @property
    def endpoint(self) -> str:
        """The endpoint actually bound or connected (a wildcard port resolved)."""
        return self._endpoint

    @property
    def catchup_endpoint(self) -> str | None:
        """The catch-up endpoint actually bound (a wildcard port resolved), or None."""
        return self._catchup.endpoint if self._catchup is not None else None

    @property
    def spool(self) -> EventSpool | None:
        return self._spool

    @property
    def stream(self) -> str:
        """The stream this publisher's events belong to (stamped on every event)."""
        return self._stream

    @property
    def next_sequence(self) -> int:
        """The sequence the next event should have: one past the spool's last at start (1 for a
        new stream), then one past the last published. `EventSequencer.advance_to` takes it."""
        with self._lock:
            return self._last_sequence + 1

    def publish(self, event: PlateEvent) -> bool:
        """Spool (durably) then send `event` as ``[plate.<camera_id>, JSON]``.

        Returns
        -------
        bool
            True if every subscriber's queue took it; False if it was dropped for at least one
            whose queue had just filled (``sndhwm``): counted in `overflows`, logged at most every
            10 s. The others got it either way.

        Raises
        ------
        PublisherError
            If the spool cannot be written (the event is then not sent) or the socket fails.
        """
        payload = json.dumps(event_to_json(event, self._stream), separators=(",", ":"),
                             ensure_ascii=False)
        data = payload.encode("utf-8")
        topic = topic_for(event.camera_id).encode("utf-8")
        with self._lock:
            socket = self._socket
            if socket is None:
                raise PublisherError("event publisher is stopped")
            if self._spool is not None:
                try:
                    self._spool.append(data)
                except OSError as exc:
                    logger.error("cannot write event spool %s: %s", self._spool.path, exc)
                    raise PublisherError(
                        f"cannot write event spool {self._spool.path}: {exc}"
                    ) from exc
            self._last_sequence = max(self._last_sequence, event.sequence)
            self._discard_subscriptions(socket)
            delivered = True
            try:
                try:
                    socket.send_multipart([topic, data], flags=zmq.NOBLOCK)
                except zmq.Again:
                    # Some subscriber's queue is full: send to the rest as PUB does (never block).
                    delivered = False
                    socket.setsockopt(zmq.XPUB_NODROP, 0)
                    try:
                        socket.send_multipart([topic, data], flags=zmq.NOBLOCK)
                    finally:
                        socket.setsockopt(zmq.XPUB_NODROP, 1)
            except zmq.ZMQError as exc:
                logger.error("cannot send event %s on %s: %s", event.event_id, self._endpoint, exc)
                raise PublisherError(f"cannot send event on {self._endpoint}: {exc}") from exc
            self.events_published += 1
            if not delivered:
                self._count_overflow(event)
            return delivered

    @staticmethod
    def _discard_subscriptions(socket: zmq.Socket) -> None:
        """XPUB hands (un)subscriptions to the application; nothing here needs them, and unread
        they would pile up."""
        while socket.poll(0, zmq.POLLIN):
            socket.recv_multipart(zmq.NOBLOCK)

    def _count_overflow(self, event: PlateEvent) -> None:
        self.overflows += 1
        self._overflows_unlogged += 1
        now = time.monotonic()
        if now - self._overflow_logged_at >= _OVERFLOW_LOG_INTERVAL_S:
            logger.warning(
                "a subscriber is not keeping up: its queue of publisher.sndhwm %d events was full "
                "%d time(s), the last at event %d; it misses events until it reads again%s",
                self._config.sndhwm, self._overflows_unlogged, event.sequence,
                " (they are in the spool)" if self._spool is not None else "",
            )
            self._overflows_unlogged, self._overflow_logged_at = 0, now

    def stop(self) -> None:
        """Close the sockets (waiting up to `linger_ms` to flush) and the spool; idempotent."""
        with self._lock:
            self._close_all(self._config.linger_ms)

    def _close_all(self, linger_ms: int) -> None:
        if self._catchup is not None:
            self._catchup.stop()
            self._catchup = None
        if self._socket is not None:
            self._socket.close(linger=linger_ms)
            self._socket = None
        if self._curve_server is not None:
            self._curve_server.close()
            self._curve_server = None
        if self._spool is not None:
            self._spool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
