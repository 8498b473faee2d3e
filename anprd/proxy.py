"""Fan-in: many daemons' events through one endpoint, for a central consumer.

`EventProxy` binds an XSUB socket (the *frontend*: daemons connect to it with
``publisher.mode: connect``) and an XPUB socket (the *backend*: subscribers connect to it) and
runs ``zmq.proxy_steerable`` between them on a thread: events flow from every daemon to every
subscriber, subscriptions flow back. Each side can be a CURVE server with its own allowed client
keys (the daemons' on the frontend, the subscribers' on the backend). Each daemon keeps its own
``stream`` and ``sequence``, so a subscriber behind the proxy still sees each daemon's gaps.
`proxy_command` backs ``anprd proxy``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

import zmq

from anprd.config.publisher import check_tcp_port
from anprd.curve import CurveError, CurveServer, CurveServerKeys
from anprd.errors import AnprdError

__all__ = ["EventProxy", "ProxyError", "proxy_command"]

logger = logging.getLogger(__name__)


class ProxyError(AnprdError):
    """The proxy could not bind a side; the message names the endpoint."""


class EventProxy:
    """XSUB (frontend, daemons connect) to XPUB (backend, subscribers connect), on a thread.

    Parameters
    ----------
    frontend
        Endpoint to bind for daemons (e.g. ``tcp://*:5557``; a ``*`` port picks a free one).
    backend
        Endpoint to bind for subscribers.
    frontend_curve, backend_curve
        CURVE server keys of each side (its allowed clients included); None: that side is plain.
    hwm
        Messages queued per connected daemon and per subscriber before that one's are dropped.
    context
        ZeroMQ context; default the process-wide one.

    Raises
    ------
    ProxyError
        A side cannot be bound.
    """

    def __init__(
        self,
        frontend: str,
        backend: str,
        *,
        frontend_curve: CurveServerKeys | None = None,
        backend_curve: CurveServerKeys | None = None,
        hwm: int = 10_000,
        context: zmq.Context | None = None,
    ) -> None:
        context = context or zmq.Context.instance()
        self._curves: list[CurveServer] = []
        self._sockets: list[zmq.Socket] = []
        try:
            self._xsub = self._bind(context, zmq.XSUB, frontend, frontend_curve, hwm, "frontend")
            self._xpub = self._bind(context, zmq.XPUB, backend, backend_curve, hwm, "backend")
            control = f"inproc://anprd-proxy-{uuid.uuid4().hex}"
            self._control = context.socket(zmq.PAIR)
            self._sockets.append(self._control)
            self._control.bind(control)
            self._control_peer = context.socket(zmq.PAIR)
            self._sockets.append(self._control_peer)
            self._control_peer.connect(control)
        except BaseException:
            self._close()
            raise
        self.frontend = self._xsub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.backend = self._xpub.getsockopt_string(zmq.LAST_ENDPOINT)
        # The sockets are handed to the proxy thread here; only it uses them until it ends.
        self._thread = threading.Thread(target=self._run, name="event-proxy", daemon=True)
        self._thread.start()
        logger.info("proxy: daemons connect to %s%s, subscribers to %s%s", self.frontend,
                    " (CURVE)" if frontend_curve else "", self.backend,
                    " (CURVE)" if backend_curve else "")

    def _bind(
        self,
        context: zmq.Context,
        kind: int,
        endpoint: str,
        keys: CurveServerKeys | None,
        hwm: int,
        side: str,
    ) -> zmq.Socket:
        socket = context.socket(kind)
        self._sockets.append(socket)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, hwm)
        socket.setsockopt(zmq.RCVHWM, hwm)
        if keys is not None:
            curve = CurveServer(context, keys)
            self._curves.append(curve)
            curve.apply(socket)
        try:
            socket.bind(endpoint)
        except zmq.ZMQError as exc:
            raise ProxyError(f"cannot bind the proxy's {side} to {endpoint}: {exc}") from None
        return socket

    def _run(self) -> None:
        with contextlib.suppress(zmq.ContextTerminated):  # the process is ending anyway
            zmq.proxy_steerable(self._xsub, self._xpub, None, self._control_peer)

    def stop(self) -> None:
        """Stop forwarding and close both sides; idempotent."""
        if self._thread.is_alive():
            self._control.send(b"TERMINATE")
            self._thread.join()
        self._close()

    def _close(self) -> None:
        for socket in self._sockets:
            socket.close(linger=0)
        self._sockets.clear()
        for curve in self._curves:
            curve.close()
        self._curves.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def proxy_command(
    frontend: str,
    backend: str,
    *,
    curve_secret_key: Path | None = None,
    frontend_clients: Sequence[Path] = (),
    backend_clients: Sequence[Path] = (),
    hwm: int = 10_000,
) -> int:
    """``anprd proxy``: run an `EventProxy` until SIGTERM or SIGINT.

    Prints one JSON line on stdout once both sides are bound, ``{"frontend": ..., "backend":
    ...}`` (the endpoints with any ``*`` port resolved). A side is CURVE when its allowed client
    keys are given (with `curve_secret_key`, the proxy's own key pair).

    Returns
    -------
    int
        0 after a stop signal.

    Raises
    ------
    AnprdError
        A bad endpoint, key file or option, or a side that cannot be bound (one line).
    """
    for endpoint in (frontend, backend):
        try:
            check_tcp_port(endpoint)
        except ValueError as exc:
            raise ProxyError(f"{endpoint}: {exc}") from None
    if (frontend_clients or backend_clients) and curve_secret_key is None:
        raise ProxyError("--frontend-clients and --backend-clients need --curve-secret-key "
                         "(the proxy's key pair)")
    if curve_secret_key is not None and not (frontend_clients or backend_clients):
        raise ProxyError("--curve-secret-key needs --frontend-clients or --backend-clients: "
                         "the public keys allowed in on that side")
    try:
        front = (CurveServerKeys.from_files(curve_secret_key, frontend_clients)
                 if curve_secret_key is not None and frontend_clients else None)
        back = (CurveServerKeys.from_files(curve_secret_key, backend_clients)
                if curve_secret_key is not None and backend_clients else None)
    except CurveError as exc:
        raise ProxyError(str(exc)) from None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with EventProxy(frontend, backend, frontend_curve=front, backend_curve=back,
                        hwm=hwm) as proxy:
            print(json.dumps({"frontend": proxy.frontend, "backend": proxy.backend}), flush=True)
            while not stop.wait(0.5):  # a timed wait, so the signal handler gets to run
                pass
            logger.info("proxy: stopping")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.stdout.flush()
    return 0
