"""Event subscriber: receives plate events from an `anprd.publisher.EventPublisher`.

ZeroMQ subscriptions match topic *prefixes*, so ``plate.cam1`` would also receive ``plate.cam10``;
`EventSubscriber` therefore also checks the topic exactly. `subscribe_command` backs the CLI's
``anprd subscribe ENDPOINT [--camera ID] [--pretty]``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from types import TracebackType
from typing import Any, Self

import zmq

from anprd.config.publisher import check_tcp_port
from anprd.publisher import Topic, topic_for

__all__ = ["EventDecodeError", "EventSubscriber", "subscribe_command"]

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
    ) -> None:
        self._endpoint = endpoint
        self._topic = topic_for(camera_id) if camera_id is not None else None
        socket = (context or zmq.Context.instance()).socket(zmq.SUB)
        socket.setsockopt(zmq.RCVHWM, rcvhwm)
        socket.setsockopt(zmq.LINGER, 0)
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


def subscribe_command(
    endpoint: str,
    camera_id: str | None,
    pretty: bool,
    max_events: int | None,
    timeout_s: float | None,
) -> int:
    """Print events from `endpoint` to stdout, one JSON per line (indented when `pretty`).

    Stops after `max_events` events or `timeout_s` seconds in all (None: no limit), or on Ctrl-C.
    Malformed messages are reported on stderr and skipped.

    Returns
    -------
    int
        0: stopped after max_events or the timeout (with max_events None), or stdout closed;
        1: timed out before max_events events; 2: bad endpoint; 130: interrupted.
    """
    try:
        check_tcp_port(endpoint)
    except ValueError as exc:
        print(f"anprd subscribe: {endpoint}: {exc}", file=sys.stderr)
        return 2
    try:
        subscriber = EventSubscriber(endpoint, camera_id)
    except zmq.ZMQError as exc:
        print(f"anprd subscribe: cannot connect to {endpoint}: {exc}", file=sys.stderr)
        return 2
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    received = 0
    try:
        while max_events is None or received < max_events:
            wait = _POLL_SLICE_S
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return 0 if max_events is None else 1
            try:
                event = subscriber.recv(wait)
            except EventDecodeError as exc:
                print(f"anprd subscribe: skipped a message: {exc}", file=sys.stderr)
                continue
            if event is None:
                continue
            text = json.dumps(event, indent=2 if pretty else None, ensure_ascii=False)
            try:
                print(text, flush=True)
            except BrokenPipeError:
                # Reader went away (e.g. piped into head): quiet exit, no traceback at shutdown.
                sys.stdout = open(  # noqa: SIM115 - replaces the broken stream for interpreter exit
                    "/dev/null", "w"
                )
                return 0
            received += 1
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        subscriber.stop()
