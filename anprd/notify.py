"""systemd service notification (sd_notify) over a plain AF_UNIX datagram socket.

systemd passes ``NOTIFY_SOCKET`` to Type=notify services; every message is one datagram of
``KEY=VALUE`` lines. Without ``NOTIFY_SOCKET`` (run by hand, in tests, in a container) every call
is a no-op, so the daemon never needs to know how it was started.

The daemon's protocol (see systemd/anprd.service):

- ``READY=1`` once the model is loaded and the first frame was read (:meth:`Notifier.ready`);
- ``STATUS=...`` every few seconds with fps and camera state (:meth:`Notifier.status`,
  :func:`format_status`);
- ``WATCHDOG=1`` only while frames advance (:class:`Watchdog`), so systemd restarts a stalled
  pipeline after ``WatchdogSec``;
- ``RELOADING=1`` ... ``READY=1`` around a SIGHUP config reload;
- ``STOPPING=1`` on SIGTERM, before the graceful drain.

Sending never raises: a lost notification must not take the daemon down.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Self

__all__ = [
    "Notifier",
    "Watchdog",
    "default_notifier",
    "format_status",
    "watchdog_interval_s",
]

_log = logging.getLogger(__name__)

# A STATUS line is shown by `systemctl status`; keep it to one short line.
_STATUS_MAX_CHARS = 200
# Datagram sends to systemd are instant; the timeout only guards against a full receive queue.
_SEND_TIMEOUT_S = 1.0


def _socket_address(value: str) -> str:
    """``@name`` is Linux's abstract namespace (a leading NUL byte); anything else is a path."""
    return "\0" + value[1:] if value.startswith("@") else value


class Notifier:
    """Sends sd_notify messages to one socket; a no-op when there is none.

    Parameters
    ----------
    socket_path
        The notification socket: a filesystem path or ``@abstract-name``. ``None`` reads
        ``NOTIFY_SOCKET`` from the environment; an empty value disables notification.
    """

    def __init__(self, socket_path: str | None = None) -> None:
        if socket_path is None:
            socket_path = os.environ.get("NOTIFY_SOCKET", "")
        self._socket_path = socket_path
        self._address = _socket_address(socket_path) if socket_path else ""
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._failing = False

    @property
    def socket_path(self) -> str:
        return self._socket_path

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify (normally: started by systemd)."""
        return bool(self._address)

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields as one datagram; return True when it was sent."""
        if not self._address or not fields:
            return False
        payload = "\n".join(fields).encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.settimeout(_SEND_TIMEOUT_S)
                self._sock.sendto(payload, self._address)
            except OSError as exc:
                # Log once per failure streak, not once per watchdog tick.
                if not self._failing:
                    _log.warning("sd_notify to %s failed: %s", self._socket_path, exc)
                    self._failing = True
                return False
            if self._failing:
                _log.info("sd_notify to %s works again", self._socket_path)
                self._failing = False
            return True

    def ready(self, status_text: str | None = None) -> bool:
        """Startup (or a reload) finished: the service is up."""
        fields = ["READY=1"]
        if status_text:
            fields.append(_status_field(status_text))
        return self.send(*fields)

    def status(self, text: str) -> bool:
        """Free-form one-line status, shown by ``systemctl status``."""
        return self.send(_status_field(text))

    def watchdog(self) -> bool:
        """Keep-alive ping; prefer :class:`Watchdog`, which pings only while frames advance."""
        return self.send("WATCHDOG=1")

    def stopping(self, status_text: str | None = None) -> bool:
        """Shutdown began (sent on SIGTERM, before draining)."""
        fields = ["STOPPING=1"]
        if status_text:
            fields.append(_status_field(status_text))
        return self.send(*fields)

    def reloading(self) -> bool:
        """A config reload began; send :meth:`ready` when it is done.

        ``MONOTONIC_USEC`` makes the message valid for Type=notify-reload (systemd >= 253) too.
        """
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={now_us}")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _status_field(text: str) -> str:
    # A newline would start a new KEY=VALUE field; systemd shows one line anyway.
    line = " ".join(text.split())
    if len(line) > _STATUS_MAX_CHARS:
        line = line[: _STATUS_MAX_CHARS - 3] + "..."
    return f"STATUS={line}"


def watchdog_interval_s(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """How often to ping the watchdog: half of systemd's ``WatchdogSec``, or None when off.

    Reads ``WATCHDOG_USEC``; ``WATCHDOG_PID``, when set, must be this process (``pid``, default
    ``os.getpid()``), since a child that inherited the variables must not ping for its parent.
    """
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid:
        try:
            if int(watchdog_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 2_000_000


def format_status(camera_fps: Mapping[str, float], camera_state: Mapping[str, str]) -> str:
    """One STATUS line, e.g. ``gate1 up 14.9 fps; gate2 reconnecting 0.0 fps``.

    ``camera_state`` holds a short word per camera (up, connecting, reconnecting, stopped).
    """
    cameras = sorted(set(camera_fps) | set(camera_state))
    if not cameras:
        return "no cameras"
    return "; ".join(
        f"{camera} {camera_state.get(camera, 'unknown')} {camera_fps.get(camera, 0.0):.1f} fps"
        for camera in cameras
    )


class Watchdog:
    """Pings systemd's watchdog only while the pipeline makes progress.

    The pipeline calls :meth:`frame_advanced` for every processed frame (cheap: one clock read);
    the main loop calls :meth:`tick` often (every second or so). ``tick`` sends ``WATCHDOG=1``
    at most every ``ping_interval_s`` and only if a frame advanced within ``stall_timeout_s``.
    A stalled pipeline therefore stops pinging and systemd restarts the service once
    ``WatchdogSec`` passes without a ping (so the restart comes after roughly
    ``stall_timeout_s + WatchdogSec``).

    Before the first :meth:`frame_advanced` the pipeline counts as stalled: READY=1 is sent only
    after the first frame, and systemd arms the watchdog only after READY=1.

    Parameters
    ----------
    notifier
        Where pings go; default: a :class:`Notifier` for ``NOTIFY_SOCKET``.
    stall_timeout_s
        Longest time without a processed frame that still counts as healthy.
    ping_interval_s
        Minimum time between pings; default :func:`watchdog_interval_s`. When neither is set
        (no ``WatchdogSec``), :meth:`tick` never pings.
    clock
        Monotonic seconds; injectable for tests.
    """

    def __init__(
        self,
        notifier: Notifier | None = None,
        stall_timeout_s: float = 10.0,
        ping_interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stall_timeout_s <= 0:
            raise ValueError(f"stall_timeout_s must be > 0, got {stall_timeout_s}")
        if ping_interval_s is not None and ping_interval_s <= 0:
            raise ValueError(f"ping_interval_s must be > 0, got {ping_interval_s}")
        self._notifier = notifier if notifier is not None else default_notifier()
        self._stall_timeout_s = stall_timeout_s
        self._ping_interval_s = ping_interval_s if ping_interval_s is not None else watchdog_interval_s()
        self._clock = clock
        # Written by pipeline threads, read by the main loop; a float store is atomic in CPython.
        self._last_frame: float | None = None
        self._last_loop: float | None = None
        self._last_ping: float | None = None
        self._stalled_logged = False

    @property
    def stall_timeout_s(self) -> float:
        return self._stall_timeout_s

    @property
    def ping_interval_s(self) -> float | None:
        return self._ping_interval_s

    def frame_advanced(self) -> None:
        """Record progress: a frame went through the pipeline."""
        self._last_frame = self._clock()

    def worker_looped(self) -> None:
        """Record that the inference worker went round its loop, with a frame or without one."""
        self._last_loop = self._clock()

    def seconds_since_frame(self, now: float | None = None) -> float | None:
        """Seconds since the last processed frame, or None before the first one."""
        if self._last_frame is None:
            return None
        return (self._clock() if now is None else now) - self._last_frame

    def is_stalled(self, now: float | None = None, cameras_down: bool = False) -> bool:
        """No frame processed within the stall timeout, unless `cameras_down` (every camera without
        frames is down and being reconnected on schedule) and the worker looped within it: a
        camera outage is handled in the process, and a restart would only lose pending tracks."""
        now = self._clock() if now is None else now
        since = self.seconds_since_frame(now)
        if since is not None and since <= self._stall_timeout_s:
            return False
        waiting = cameras_down and self._last_loop is not None
        return not (waiting and now - self._last_loop <= self._stall_timeout_s)

    def tick(self, cameras_down: bool = False) -> bool:
        """Ping if healthy (`is_stalled`) and due; return True when ``WATCHDOG=1`` was sent."""
        if self._ping_interval_s is None or not self._notifier.enabled:
            return False
        now = self._clock()
        if self.is_stalled(now, cameras_down):
            since = self.seconds_since_frame(now)
            if since is not None and not self._stalled_logged:
                _log.error(
                    "pipeline stalled: no frame processed for %.1f s; stopped pinging the "
                    "systemd watchdog, expect a restart",
                    since,
                )
                self._stalled_logged = True
            return False
        if self._stalled_logged:
            _log.warning("pipeline healthy again; resumed pinging the systemd watchdog")
            self._stalled_logged = False
        if self._last_ping is not None and now - self._last_ping < self._ping_interval_s:
            return False
        if self._notifier.watchdog():
            self._last_ping = now
            return True
        return False


# --- The process's notifier, for NOTIFY_SOCKET from the environment ----------------------

_default_lock = threading.Lock()
_default: Notifier | None = None


def default_notifier() -> Notifier:
    """The process-wide :class:`Notifier` for the current ``NOTIFY_SOCKET``."""
    global _default
    with _default_lock:
        current = os.environ.get("NOTIFY_SOCKET", "")
        # Re-created if the environment changed (tests; a re-exec'd manager keeps the value).
        if _default is None or _default.socket_path != current:
            if _default is not None:
                _default.close()
            _default = Notifier(current)
        return _default
