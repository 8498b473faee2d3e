"""Prometheus metrics, plus liveness and readiness, on one small HTTP endpoint.

:class:`Metrics` holds every series in its own ``CollectorRegistry`` (never the global one, so
tests and reloads can create several). :class:`MetricsServer` serves it:

- ``GET /metrics``: the Prometheus (or OpenMetrics, by ``Accept``) exposition;
- ``GET /healthz``: ``200 ok`` while the process serves HTTP (liveness);
- ``GET /ready``: ``200 ready`` once the daemon is ready, else ``503`` and the reason.

Series, all labelled by ``camera``: ``anprd_frames_read_total``, ``anprd_frames_dropped_total``,
``anprd_frames_processed_total``, ``anprd_events_published_total``, ``anprd_reconnects_total``
(counters); ``anprd_queue_depth``, ``anprd_active_tracks``, ``anprd_camera_up`` (gauges);
``anprd_inference_seconds`` (histogram). Unlabelled: ``anprd_subscriber_overflows_total``,
``anprd_ready``, ``anprd_build_info``
and the standard ``process_*`` series (memory, CPU, open files: a months-long run's leaks show
there).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket
import socketserver
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Self

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from anprd import __version__
from anprd.errors import AnprdError

if TYPE_CHECKING:
    from anprd.config.service import MetricsConfig

__all__ = [
    "INFERENCE_BUCKETS_S",
    "Metrics",
    "MetricsServer",
    "MetricsServerError",
    "SourceCounts",
    "start_metrics_server",
]

_log = logging.getLogger(__name__)

# Inference latency from 5 ms (a few crops) to 5 s (a full pyramid on a busy CPU).
INFERENCE_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


@dataclass(frozen=True)
class SourceCounts:
    """Last totals seen from one grabber, to turn its plain counters into increments."""

    frames_read: int = 0
    frames_dropped: int = 0
    reconnects: int = 0


class Metrics:
    """Every anprd metric, in a private registry.

    Parameters
    ----------
    registry
        Registry to register into; default a new one.
    process_metrics
        Also export ``process_*`` and ``python_info`` for this process.
    """

    def __init__(self, registry: CollectorRegistry | None = None, process_metrics: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.frames_read = Counter(
            "anprd_frames_read",
            "Frames read from the camera.",
            ["camera"],
            registry=reg,
        )
        self.frames_dropped = Counter(
            "anprd_frames_dropped",
            "Frames dropped because the processing queue was full.",
            ["camera"],
            registry=reg,
        )
        self.frames_processed = Counter(
            "anprd_frames_processed",
            "Frames through detection and tracking.",
            ["camera"],
            registry=reg,
        )
        self.frames_failed = Counter(
            "anprd_frames_failed",
            "Frames skipped because detection or tracking raised an error (logged).",
            ["camera"],
            registry=reg,
        )
        self.events_published = Counter(
            "anprd_events_published",
            "Plate events published.",
            ["camera"],
            registry=reg,
        )
        self.reconnects = Counter(
            "anprd_reconnects",
            "Camera reconnection attempts.",
            ["camera"],
            registry=reg,
        )
        self.queue_depth = Gauge(
            "anprd_queue_depth",
            "Frames waiting to be processed.",
            ["camera"],
            registry=reg,
        )
        self.active_tracks = Gauge(
            "anprd_active_tracks", "Plates currently tracked.", ["camera"], registry=reg
        )
        self.camera_up = Gauge(
            "anprd_camera_up",
            "1 while the camera delivers frames, else 0.",
            ["camera"],
            registry=reg,
        )
        self.inference_seconds = Histogram(
            "anprd_inference_seconds",
            "Detection and reading time per frame.",
            ["camera"],
            buckets=INFERENCE_BUCKETS_S,
            registry=reg,
        )
        self.subscriber_overflows = Counter(
            "anprd_subscriber_overflows",
            "Times a subscriber's send queue (publisher.sndhwm events) was full: it misses the "
            "events sent until it reads again (a gap in its sequence; the spool has them).",
            registry=reg,
        )
        self.ready_gauge = Gauge("anprd_ready", "1 once the daemon is ready, else 0.", registry=reg)
        Info("anprd_build", "anprd version.", registry=reg).info({"version": __version__})
        if process_metrics:
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)

        self._lock = threading.Lock()
        self._source_counts: dict[str, SourceCounts] = {}
        self._ready = False
        self._not_ready_reason = "starting"

    # --- cameras ---------------------------------------------------------------------------

    def add_camera(self, camera: str) -> None:
        """Create the camera's series at zero, so dashboards see it before its first frame."""
        for metric in self._per_camera():
            metric.labels(camera)

    def remove_camera(self, camera: str) -> None:
        """Drop the camera's series (it left the config on reload)."""
        for metric in self._per_camera():
            with contextlib.suppress(KeyError):  # never created
                metric.remove(camera)
        with self._lock:
            self._source_counts.pop(camera, None)

    def _per_camera(self) -> Iterable[Counter | Gauge | Histogram]:
        return (
            self.frames_read,
            self.frames_dropped,
            self.frames_processed,
            self.frames_failed,
            self.events_published,
            self.reconnects,
            self.queue_depth,
            self.active_tracks,
            self.camera_up,
            self.inference_seconds,
        )

    # --- updates ---------------------------------------------------------------------------

    def observe_source(
        self,
        camera: str,
        frames_read: int,
        frames_dropped: int,
        reconnects: int,
        queue_depth: int | None = None,
    ) -> None:
        """Sync a grabber's monotonic totals into the Prometheus counters (adds the increase).

        A total lower than last time means the grabber was re-created (e.g. config reload);
        its new total then counts from zero, as Prometheus expects of a counter reset.
        """
        current = SourceCounts(frames_read, frames_dropped, reconnects)
        with self._lock:
            last = self._source_counts.get(camera, SourceCounts())
            self._source_counts[camera] = current
        for counter, new, old in (
            (self.frames_read, current.frames_read, last.frames_read),
            (self.frames_dropped, current.frames_dropped, last.frames_dropped),
            (self.reconnects, current.reconnects, last.reconnects),
        ):
            increase = new - old if new >= old else new
            if increase > 0:
                counter.labels(camera).inc(increase)
        if queue_depth is not None:
            self.queue_depth.labels(camera).set(queue_depth)

    def reset_source(self, camera: str) -> None:
        """Forget the camera's last totals: call when its grabber is re-created from zero.

        :meth:`observe_source` detects a reset by a total going down; a new grabber that already
        counted past the old totals before the next sync would otherwise be under-counted.
        """
        with self._lock:
            self._source_counts.pop(camera, None)

    def frame_processed(self, camera: str, inference_s: float | None = None) -> None:
        """Count one processed frame and, when given, its inference time."""
        self.frames_processed.labels(camera).inc()
        if inference_s is not None:
            self.inference_seconds.labels(camera).observe(inference_s)

    def frame_failed(self, camera: str) -> None:
        self.frames_failed.labels(camera).inc()

    def event_published(self, camera: str, count: int = 1) -> None:
        self.events_published.labels(camera).inc(count)

    def subscriber_overflowed(self) -> None:
        """A subscriber's send queue was full (`EventPublisher.publish` returned False)."""
        self.subscriber_overflows.inc()

    def set_active_tracks(self, camera: str, count: int) -> None:
        self.active_tracks.labels(camera).set(count)

    def set_camera_up(self, camera: str, up: bool) -> None:
        self.camera_up.labels(camera).set(1 if up else 0)

    # --- readiness -------------------------------------------------------------------------

    def set_ready(self) -> None:
        with self._lock:
            self._ready, self._not_ready_reason = True, ""
        self.ready_gauge.set(1)

    def set_not_ready(self, reason: str) -> None:
        """Not ready (starting, reloading, draining); ``reason`` is shown by ``/ready``."""
        with self._lock:
            self._ready, self._not_ready_reason = False, reason or "not ready"
        self.ready_gauge.set(0)

    def readiness(self) -> tuple[bool, str]:
        """``(ready, reason)``; reason is empty when ready."""
        with self._lock:
            return self._ready, self._not_ready_reason


class MetricsServerError(AnprdError):
    """The metrics endpoint could not start; the message names the address."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck scrape must not block shutdown
    metrics: Metrics

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), which can hang for
        # seconds on a camera host with broken DNS; the name is only cosmetic here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = (
            str(self.server_address[0]),
            int(self.server_address[1]),
        )


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # seconds a client may take to send its request
    server_version = "anprd"
    sys_version = ""

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        metrics = self.server.metrics
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(metrics.registry), content_type, send_body)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8", send_body)
        elif path == "/ready":
            ready, reason = metrics.readiness()
            body = b"ready\n" if ready else f"not ready: {reason}\n".encode()
            self._send(200 if ready else 503, body, "text/plain; charset=utf-8", send_body)
        else:
            self._send(
                404,
                b"not found; try /metrics, /healthz or /ready\n",
                "text/plain",
                send_body,
            )

    def _send(self, code: int, body: bytes, content_type: str, send_body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # One line per scrape would flood the journal; keep it for debugging only.
        _log.debug("metrics http %s: " + format, self.address_string(), *args)


class MetricsServer:
    """Serves :class:`Metrics` over HTTP on a background thread.

    Parameters
    ----------
    metrics
        What to serve.
    address
        IP address to bind (IPv4 or IPv6; ``0.0.0.0`` / ``::`` for all interfaces).
    port
        TCP port; 0 picks a free one (see :attr:`port`).
    poll_interval_s
        How often the serving thread checks for :meth:`stop`; bounds how long ``stop`` takes.
    """

    def __init__(
        self, metrics: Metrics, address: str = "127.0.0.1", port: int = 9108, poll_interval_s: float = 0.5
    ) -> None:
        self._metrics = metrics
        self._poll_interval_s = poll_interval_s
        self._address = address
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0)."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self._address}]" if ":" in self._address else self._address
        return f"http://{host}:{self.port}"

    def start(self) -> Self:
        """Bind and serve; raises :class:`MetricsServerError` naming the address on failure."""
        if self._server is not None:
            return self
        where = f"{self._address}:{self._requested_port}"
        try:
            ipv6 = ipaddress.ip_address(self._address).version == 6
        except ValueError:
            raise MetricsServerError(f"metrics address {self._address!r} is not an IP address") from None
        server_class = _Server6 if ipv6 else _Server
        try:
            server = server_class((self._address, self._requested_port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                reason = "address already in use (another anprd instance? set metrics.port)"
            else:
                reason = exc.strerror or str(exc)
            raise MetricsServerError(f"cannot serve metrics on {where}: {reason}") from exc
        server.metrics = self._metrics
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": self._poll_interval_s},
            name="metrics-http",
            daemon=True,
        )
        self._thread.start()
        _log.info("metrics on %s/metrics", self.url)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving and release the port; safe to call twice."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_metrics_server(metrics: Metrics, config: MetricsConfig) -> MetricsServer | None:
    """Start the endpoint described by ``config``; None when ``config.enabled`` is false."""
    if not config.enabled:
        return None
    return MetricsServer(metrics, config.address, config.port).start()
