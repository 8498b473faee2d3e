"""Event publisher: ZeroMQ PUB for live consumers, plus a JSON-lines spool as the durable record.

Each event is sent as a two-part message ``[topic, JSON]``, topic ``plate.<camera_id>``
(`Topic`, `topic_for`), so subscribers can filter by camera (prefix match: see
`anprd.subscriber`, which also checks the topic exactly).

PUB never blocks and, by design, drops messages for subscribers that are slow, absent, or still
connecting (the "slow joiner"), and beyond the send high-water mark (`sndhwm`, kept high so bursts
pass). ZeroMQ is therefore the *live* feed only. The *durable* record is the spool: when
``spool_path`` is set, every event is appended to it as one JSON line and fsync'd *before* it is
sent, so an event that reached any subscriber is on disk; the spool rotates by size to
``<spool>.1``, ``<spool>.2``, ... like logging's RotatingFileHandler.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Self

import zmq

from anprd.config.publisher import PublisherConfig
from anprd.errors import AnprdError
from anprd.events import event_to_json
from anprd.types import PlateEvent

__all__ = ["EventPublisher", "EventSpool", "PublisherError", "Topic", "topic_for"]

logger = logging.getLogger(__name__)


class Topic(StrEnum):
    """Message topics; the wire topic is ``<topic>.<camera_id>``."""

    PLATE = "plate"


def topic_for(camera_id: str, topic: Topic = Topic.PLATE) -> str:
    """The wire topic of `camera_id`'s messages: ``plate.<camera_id>``."""
    return f"{topic.value}.{camera_id}"


class PublisherError(AnprdError):
    """The publisher could not bind, connect, send or write its spool."""


class EventSpool:
    """Append-only JSON-lines file, fsync'd per line, rotated by size.

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
    """

    def __init__(self, path: Path, *, max_bytes: int, backups: int, fsync: bool = True) -> None:
        if max_bytes < 1 or backups < 1:
            raise ValueError("max_bytes and backups must be >= 1")
        self._path = Path(path)
        self._max_bytes = max_bytes
        self._backups = backups
        self._fsync = fsync
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = self._open()
        self._closed = False
        self.lines_written = 0

    @property
    def path(self) -> Path:
        return self._path

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

    def close(self) -> None:
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class EventPublisher:
    """Publishes `PlateEvent`s on a ZeroMQ PUB socket, spooling each to disk first.

    Parameters
    ----------
    config
        Endpoint, bind or connect, high-water mark, linger and spool.
    context
        ZeroMQ context to use; default: the process-wide ``zmq.Context.instance()``. The publisher
        never terminates a context.

    Raises
    ------
    PublisherError
        If the socket cannot bind or connect (e.g. address in use) or the spool cannot be opened.
    """

    def __init__(self, config: PublisherConfig, context: zmq.Context | None = None) -> None:
        self._config = config
        self._lock = threading.Lock()  # zmq sockets are not thread-safe
        self.events_published = 0
        self._spool: EventSpool | None = None
        if config.spool_path is not None:
            try:
                self._spool = EventSpool(
                    config.spool_path,
                    max_bytes=config.spool_max_bytes,
                    backups=config.spool_backups,
                    fsync=config.spool_fsync,
                )
            except OSError as exc:
                logger.error("cannot open event spool %s: %s", config.spool_path, exc)
                raise PublisherError(f"cannot open event spool {config.spool_path}: {exc}") from exc

        self._socket: zmq.Socket | None = None
        try:  # making the socket fails too when the process is out of file descriptors
            self._socket = (context or zmq.Context.instance()).socket(zmq.PUB)
            self._socket.setsockopt(zmq.SNDHWM, config.sndhwm)
            self._socket.setsockopt(zmq.LINGER, config.linger_ms)
            if config.mode == "bind":
                self._socket.bind(config.endpoint)
            else:
                self._socket.connect(config.endpoint)
        except zmq.ZMQError as exc:
            if self._socket is not None:
                self._socket.close(linger=0)
                self._socket = None
            if self._spool is not None:
                self._spool.close()
            logger.error("cannot %s PUB socket to %s: %s", config.mode, config.endpoint, exc)
            raise PublisherError(
                f"cannot {config.mode} event publisher to {config.endpoint}: {exc}"
            ) from exc
        self._endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT) or config.endpoint
        logger.info("publishing plate events on %s (%s)", self._endpoint, config.mode)

    @property
    def endpoint(self) -> str:
        """The endpoint actually bound or connected (a wildcard port resolved)."""
        return self._endpoint

    @property
    def spool(self) -> EventSpool | None:
        return self._spool

    def publish(self, event: PlateEvent) -> None:
        """Spool (durably) then send `event` as ``[plate.<camera_id>, JSON]``.

        Raises
        ------
        PublisherError
            If the spool cannot be written (the event is then not sent) or the socket fails.
        """
        payload = json.dumps(event_to_json(event), separators=(",", ":"), ensure_ascii=False)
        data = payload.encode("utf-8")
        topic = topic_for(event.camera_id).encode("utf-8")
        with self._lock:
            if self._socket is None:
                raise PublisherError("event publisher is stopped")
            if self._spool is not None:
                try:
                    self._spool.append(data)
                except OSError as exc:
                    logger.error("cannot write event spool %s: %s", self._spool.path, exc)
                    raise PublisherError(
                        f"cannot write event spool {self._spool.path}: {exc}"
                    ) from exc
            try:
                # PUB does not block: beyond the HWM ZeroMQ drops, which is what the spool is for.
                self._socket.send_multipart([topic, data], flags=zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                logger.error("cannot send event %s on %s: %s", event.event_id, self._endpoint, exc)
                raise PublisherError(f"cannot send event on {self._endpoint}: {exc}") from exc
            self.events_published += 1

    def stop(self) -> None:
        """Close the socket (waiting up to `linger_ms` to flush) and the spool; idempotent."""
        with self._lock:
            if self._socket is not None:
                self._socket.close(linger=self._config.linger_ms)
                self._socket = None
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
