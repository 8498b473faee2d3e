"""Frame grabber: one capture thread per camera turns a URL into :class:`~anprd.types.Frame` s.

Capture is split from supervision, as in Frigate. Readers (``_CaptureReader`` for OpenCV
streams, webcams and video files, ``_FolderReader`` for image folders) only open and read.
:class:`FrameSource` supervises: it paces replays, reconnects lost streams with exponential
backoff, and feeds a bounded queue that the consumer drains with :meth:`FrameSource.read`.

Live sources (rtsp, http, webcam) never wait for the consumer: when the queue is full the
oldest frame is dropped (and counted), so the detector always sees the newest picture. Replays
(video files, image folders) stamp frames with start time + media time, so a replay is
deterministic; ``fast`` pace blocks on a full queue (no frame lost), ``realtime`` pace runs at the
file's frame rate and drops like a camera. When a replay ends, the queue is closed, so
:meth:`FrameSource.read` returns ``None`` and :attr:`FrameSource.done` becomes true.

Usage::

    source = open_source(camera_config, stop_event)   # SourceError if a file is unusable
    for frame in source:                              # ends with the replay or on stop
        ...
    source.stop()
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol, Self

import cv2
import numpy as np

from anprd.config.source import CameraConfig, ReplayPace, SourceKind, mask_url
from anprd.errors import AnprdError
from anprd.imageio import IMAGE_SUFFIXES, ImageReadError, read_image
from anprd.types import Frame

__all__ = [
    "DEFAULT_VIDEO_FPS",
    "FrameSource",
    "SourceError",
    "SourceState",
    "SourceStats",
    "mask_url",
    "open_source",
    "usable_frame_rate",
]

logger = logging.getLogger(__name__)

DEFAULT_VIDEO_FPS = 25.0  # for a video that reports no usable frame rate
_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# How often a blocked producer re-checks the stop event (a shared event may be set by anyone).
_STOP_POLL_S = 0.1
# A network read that took this share of read_timeout_s or more ended by OpenCV's timeout.
_TIMED_OUT_FRACTION = 0.9
# While a camera stays down, one log line per this many seconds (attempts come every 0.25 s).
_RETRY_LOG_INTERVAL_S = 60.0


class SourceError(AnprdError):
    """A source that cannot be used (unreadable file, empty folder, failed open); one line."""


class SourceState(StrEnum):
    """Life cycle of a :class:`FrameSource`."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"


@dataclass(frozen=True)
class SourceStats:
    """Counters of one source at one moment, for metrics and health checks.

    frames_read: frames decoded from the source (including dropped and subsampled ones).
    frames_dropped: frames discarded because the consumer was too slow (queue full).
    reconnects: attempts to re-open the source after a failure, successful or not.
    queue_depth: frames waiting for the consumer.
    """

    source_id: str
    state: SourceState
    frames_read: int
    frames_dropped: int
    reconnects: int
    queue_depth: int


# ---- readers: open and read, nothing else ---------------------------------------------------


class _Reader(Protocol):
    fps: float
    frames_claimed: int | None  # how many frames the file says it holds; None: unknown or live

    def read(self) -> np.ndarray | None:
        """Next BGR image, or None at the end or on a read failure."""

    def rewind(self) -> None:
        """Start again from the first image (replays only)."""

    def close(self) -> None: ...


def usable_frame_rate(reported: float) -> float | None:
    """A video's reported frame rate, or None where it is no rate (0, NaN, a codec's 90000)."""
    return reported if 0 < reported <= 1000 else None


class _FfmpegOptionsEnv:
    """Serialises access to ``OPENCV_FFMPEG_CAPTURE_OPTIONS``.

    OpenCV reads this process-wide variable while a VideoCapture opens, so opens that need
    different values must not overlap; opens that need the same value (the usual case: cameras
    share defaults) run concurrently. When the last open ends the variable gets back its earlier
    value: left at the stream options (`probesize` 32, `analyzeduration` 0), any later
    VideoCapture in the process would read a 100-frame MJPG file as 99 frames.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._value: str | None = None
        self._users = 0
        self._saved: str | None = None  # the variable's value before the first open began

    @contextmanager
    def set_to(self, value: str | None) -> Iterator[None]:
        with self._condition:
            while self._users and self._value != value:
                self._condition.wait()
            if self._users == 0:
                self._saved = os.environ.get(_FFMPEG_OPTIONS_ENV)
                self._put(value)
                self._value = value
            self._users += 1
        try:
            yield
        finally:
            with self._condition:
                self._users -= 1
                if self._users == 0:
                    self._put(self._saved)
                self._condition.notify_all()

    @staticmethod
    def _put(value: str | None) -> None:
        if value is None:
            os.environ.pop(_FFMPEG_OPTIONS_ENV, None)
        else:
            os.environ[_FFMPEG_OPTIONS_ENV] = value


_ffmpeg_options_env = _FfmpegOptionsEnv()


def _ffmpeg_options(camera: CameraConfig, kind: SourceKind) -> str | None:
    """FFmpeg options for network streams: TCP, no probing delay, no backlog, a socket timeout."""
    if kind not in (SourceKind.RTSP, SourceKind.HTTP):
        return None
    timeout_us = int(camera.read_timeout_s * 1_000_000)
    return f"rtsp_transport;tcp|analyzeduration;0|probesize;32|fflags;nobuffer|timeout;{timeout_us}"


class _CaptureReader:
    """``cv2.VideoCapture`` on a network stream, a webcam (V4L2) or a video file (FFmpeg)."""

    def __init__(self, camera: CameraConfig, kind: SourceKind) -> None:
        self._camera = camera
        self._kind = kind
        self._capture: cv2.VideoCapture | None = None
        self.fps = DEFAULT_VIDEO_FPS
        self.frames_claimed: int | None = None
        self._open()

    def _open(self) -> None:
        camera, kind = self._camera, self._kind
        if kind is SourceKind.WEBCAM:
            device: int | str = int(camera.url) if camera.url.isdigit() else camera.url
            # V4L2 waits for a frame with select() and its own timeout, so it cannot hang.
            capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
        else:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                round(camera.open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                round(camera.read_timeout_s * 1000),
            ]
            with _ffmpeg_options_env.set_to(_ffmpeg_options(camera, kind)):
                capture = cv2.VideoCapture(camera.url, cv2.CAP_FFMPEG, params)
        if not capture.isOpened():
            capture.release()
            what = "video file" if kind is SourceKind.FILE else f"{kind.value} source"
            raise SourceError(f"cannot open {what} {mask_url(camera.url)}")
        self._capture = capture
        # MP4/MOV index every frame and AVI's header counts them; other containers' counts are
        # duration x nominal rate, which a variable-rate recording does not reach
        exact_count = Path(camera.url).suffix.lower() in (".mp4", ".m4v", ".mov", ".avi")
        if kind is SourceKind.FILE and exact_count:
            claimed = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            self.frames_claimed = claimed if claimed > 0 else None
        reported = capture.get(cv2.CAP_PROP_FPS)
        fps = usable_frame_rate(reported)
        if fps is not None:
            self.fps = fps
        elif kind is SourceKind.FILE:
            logger.warning(
                "%s: no usable frame rate in the file (%r); assuming %g fps",
                camera.url,
                reported,
                DEFAULT_VIDEO_FPS,
            )

    def read(self) -> np.ndarray | None:
        if self._capture is None:
            return None
        started = time.monotonic()
        ok, image = self._capture.read()
        # When OpenCV's read timeout fires on a hung stream, read() still succeeds, with a stale
        # frame left in FFmpeg's buffers (twice on the test server, 3 s each), so the loss would
        # show only after three timeouts. A read that took (nearly) the whole timeout is the loss.
        took = time.monotonic() - started
        if self._kind.is_network and took >= _TIMED_OUT_FRACTION * self._camera.read_timeout_s:
            return None
        return image if ok and image is not None else None

    def rewind(self) -> None:
        # Re-opening is reliable for every container; seeking to frame 0 is not.
        self.close()
        self._open()

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def _natural_key(path: Path) -> list[int | str]:
    """Sort key that puts ``2.jpg`` before ``10.jpg``."""
    return [
        int(part) if part.isdigit() else part.lower()
        for part in re.split(r"(\d+)", path.name)
    ]


class _FolderReader:
    """The image files of a folder, in natural name order."""

    def __init__(self, camera: CameraConfig) -> None:
        folder = Path(camera.url)
        if not folder.is_dir():
            raise SourceError(f"image folder not found: {folder}")
        self._paths = sorted(
            (
                p
                for p in folder.iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            ),
            key=_natural_key,
        )
        if not self._paths:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise SourceError(f"no image files ({suffixes}) in folder {folder}")
        self.fps = camera.folder_fps
        self.frames_claimed = None  # unreadable images are skipped with a warning, one by one
        self._index = 0

    def read(self) -> np.ndarray | None:
        while self._index < len(self._paths):
            path = self._paths[self._index]
            self._index += 1
            try:
                return read_image(path)
            except ImageReadError as exc:  # a camera may still be writing it
                logger.warning("%s; skipped", exc)
        return None

    def rewind(self) -> None:
        self._index = 0

    def close(self) -> None:
        pass


def _open_reader(camera: CameraConfig, kind: SourceKind) -> _Reader:
    if kind is SourceKind.FOLDER:
        return _FolderReader(camera)
    if kind is SourceKind.FILE and not Path(camera.url).is_file():
        raise SourceError(f"video file not found: {camera.url}")
    return _CaptureReader(camera, kind)


# ---- the queue between the capture thread and the consumer ----------------------------------


class _FrameQueue:
    """Bounded FIFO with two put policies (drop oldest, or wait) and an end marker."""

    def __init__(self, maxsize: int) -> None:
        self._frames: deque[Frame] = deque()
        self._maxsize = maxsize
        self._condition = threading.Condition()
        self._finished = False

    def __len__(self) -> int:
        with self._condition:
            return len(self._frames)

    @property
    def drained(self) -> bool:
        """True once the producer has finished and every frame has been taken."""
        with self._condition:
            return self._finished and not self._frames

    def put_latest(self, frame: Frame) -> bool:
        """Append without waiting; when full, drop the oldest frame and return True."""
        with self._condition:
            dropped = len(self._frames) >= self._maxsize
            if dropped:
                self._frames.popleft()
            self._frames.append(frame)
            self._condition.notify_all()
            return dropped

    def put_wait(self, frame: Frame, stop_event: threading.Event) -> bool:
        """Append, waiting while full; False (frame not queued) if stopped or finished first."""
        with self._condition:
            while len(self._frames) >= self._maxsize:
                if stop_event.is_set() or self._finished:
                    return False
                self._condition.wait(_STOP_POLL_S)
            self._frames.append(frame)
            self._condition.notify_all()
            return True

    def get(self, timeout: float | None) -> Frame | None:
        """Oldest frame; None if none arrives within ``timeout`` or the queue is drained."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while not self._frames and not self._finished:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._condition.wait(remaining)
            if self._frames:
                frame = self._frames.popleft()
                self._condition.notify_all()
                return frame
            return None

    def finish(self) -> None:
        """No more frames will come: wake every waiter."""
        with self._condition:
            self._finished = True
            self._condition.notify_all()


# ---- supervision ----------------------------------------------------------------------------


class FrameSource:
    """Frames of one camera, read by a background thread into a bounded queue.

    Parameters
    ----------
    camera
        The camera's configuration.
    stop_event
        Set to stop the capture thread; shared events stop every source that shares them.
        A private event is created when None.

    Notes
    -----
    Call :meth:`start` (or use :func:`open_source`), then :meth:`read` or iterate, then
    :meth:`stop`. A video file or folder is checked in :meth:`start`, which raises
    :class:`SourceError`; live sources connect in the background and retry forever.
    """

    def __init__(
        self, camera: CameraConfig, stop_event: threading.Event | None = None
    ) -> None:
        self.camera = camera
        self.kind = camera.kind
        self._stop_event = stop_event if stop_event is not None else threading.Event()
        self._queue = _FrameQueue(camera.queue_size)
        self._lock = threading.Lock()  # guards the counters and state below
        self._state = SourceState.CONNECTING
        self.failure: str | None = None  # why the capture thread failed (state FAILED)
        self._state_since = time.monotonic()  # when the state was last set (each attempt sets it)
        self._frames_read = 0
        self._frames_dropped = 0
        self._reconnects = 0
        self._thread: threading.Thread | None = None
        self._replay_reader: _Reader | None = None
        self._first_image: np.ndarray | None = None

    # -- consumer side

    @property
    def is_live(self) -> bool:
        """True for rtsp, http and webcam sources (newest frame wins, reconnects)."""
        return self.kind.is_live

    @property
    def state(self) -> SourceState:
        with self._lock:
            return self._state

    def reconnecting_on_schedule(self, now: float | None = None) -> bool:
        """True while a live camera is down and handled: connecting or reconnecting, with the
        current attempt or back-off begun within one open timeout plus the longest back-off (and
        a second). An open that hangs past that is a stall, not a camera outage."""
        if not self.is_live:
            return False
        with self._lock:
            state, since = self._state, self._state_since
        if state not in (SourceState.CONNECTING, SourceState.RECONNECTING):
            return False
        longest_wait = max(self.camera.reconnect_backoff_max_s, self.camera.reconnect_interval_s)
        limit = self.camera.open_timeout_s + longest_wait + 1.0
        return (time.monotonic() if now is None else now) - since <= limit

    @property
    def done(self) -> bool:
        """True once the source has stopped producing and every frame has been read."""
        return self._queue.drained

    def stats(self) -> SourceStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return SourceStats(
                source_id=self.camera.id,
                state=self._state,
                frames_read=self._frames_read,
                frames_dropped=self._frames_dropped,
                reconnects=self._reconnects,
                queue_depth=len(self._queue),
            )

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame, oldest first.

        Returns None when no frame arrives within ``timeout`` seconds (None: wait for one) or
        when the source is :attr:`done`.
        """
        return self._queue.get(timeout)

    def __iter__(self) -> Iterator[Frame]:
        """Frames until the replay ends or the source is stopped."""
        while (frame := self.read()) is not None:
            yield frame

    # -- life cycle

    def start(self) -> None:
        """Check a replay source (raises :class:`SourceError`) and start the capture thread."""
        if self._thread is not None:
            raise RuntimeError(f"source {self.camera.id} already started")
        if not self.is_live:
            self._open_replay()
        self._thread = threading.Thread(
            target=self._run, name=f"capture-{self.camera.id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Set the stop event and wait for the capture thread; True if it ended.

        ``timeout`` defaults to the longest a blocked open or read can take, plus a second.
        A thread still stuck after it is abandoned (a daemon thread, it ends when its read
        times out); consumers are woken either way.
        """
        if timeout is None:
            timeout = max(self.camera.open_timeout_s, self.camera.read_timeout_s) + 1.0
        self._stop_event.set()
        stopped = True
        if self._thread is not None:
            self._thread.join(timeout)
            stopped = not self._thread.is_alive()
            if not stopped:
                logger.warning(
                    "camera %s: capture thread still blocked in a read after %.1f s",
                    self.camera.id,
                    timeout,
                )
        else:
            self._close_replay()
        self._queue.finish()
        return stopped

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- capture thread

    def _set_state(self, state: SourceState) -> None:
        with self._lock:
            previous, self._state = self._state, state
            self._state_since = time.monotonic()
        if state is not previous:
            logger.info("camera %s: %s", self.camera.id, state.value)

    def _run(self) -> None:
        try:
            if self.is_live:
                self._run_live()
            else:
                self._run_replay()
            self._set_state(SourceState.ENDED)
        except SourceError as exc:  # a user's error: reported once, by whoever reads `failure`
            self.failure = str(exc)
            logger.debug("camera %s: %s", self.camera.id, exc)
            self._set_state(SourceState.FAILED)
        except Exception as exc:
            self.failure = f"{mask_url(self.camera.url)}: capture failed ({exc})"
            logger.exception("camera %s: capture failed", self.camera.id)
            self._set_state(SourceState.FAILED)
        finally:
            self._close_replay()
            self._queue.finish()

    def _count_frame(self) -> int:
        """Count one decoded frame; returns its sequence number. Call with the lock held."""
        sequence = self._frames_read
        self._frames_read += 1
        return sequence

    def _run_live(self) -> None:
        camera = self.camera
        retrying = False
        down_since = time.monotonic()  # when the current outage (or the first connect) began
        backoff = camera.reconnect_backoff_min_s
        attempts = 0  # failed opens in this outage
        last_logged = -float("inf")
        while not self._stop_event.is_set():
            if retrying:
                with self._lock:
                    self._reconnects += 1
            self._set_state(
                SourceState.RECONNECTING if retrying else SourceState.CONNECTING
            )
            retrying = True
            try:
                reader = _open_reader(camera, self.kind)
            except Exception as exc:  # a live camera retries whatever OpenCV or FFmpeg raise
                attempts += 1
                now = time.monotonic()
                if now - last_logged >= _RETRY_LOG_INTERVAL_S:  # not a line per attempt
                    last_logged = now
                    reason = str(exc) if isinstance(exc, SourceError) else f"opening raised {exc!r}"
                    logger.warning("camera %s: %s; retrying (down %.0f s, %d attempts)",
                                   camera.id, reason, now - down_since, attempts)
            else:
                try:
                    frames = self._stream_live(reader, down_since)
                except Exception:
                    logger.exception("camera %s: reading raised; reconnecting", camera.id)
                    frames = None
                finally:
                    reader.close()
                if self._stop_event.is_set():
                    return
                if frames:
                    # It worked for a while: a new outage starts now, with fast retries again.
                    down_since, backoff, attempts = time.monotonic(), camera.reconnect_backoff_min_s, 0
                    last_logged = -float("inf")
                if frames is not None:
                    logger.warning(
                        "camera %s: no frame from %s within %.1f s after %d frames; reconnecting",
                        camera.id, mask_url(camera.url), camera.read_timeout_s, frames,
                    )
                self._set_state(SourceState.RECONNECTING)  # down from now, not after the wait
            # Fixed, short waits early in an outage: a restarting camera is back within seconds
            # and refuses connections meanwhile, which costs about a millisecond a try (an
            # unreachable host makes each try last open_timeout_s anyway). Back-off after that.
            if time.monotonic() - down_since < camera.reconnect_fast_for_s:
                wait = camera.reconnect_interval_s
            else:
                wait, backoff = backoff, min(backoff * 2, camera.reconnect_backoff_max_s)
            if self._stop_event.wait(wait):
                return

    def _stream_live(self, reader: _Reader, down_since: float) -> int:
        """Read until the stream fails or stop; returns the number of frames read."""
        min_interval = 1.0 / self.camera.max_fps if self.camera.max_fps else 0.0
        last_passed = -float("inf")
        frames = 0
        while not self._stop_event.is_set():
            image = reader.read()
            if image is None:
                break
            now = time.time()
            if frames == 0:
                self._set_state(SourceState.STREAMING)
                logger.info("camera %s: first frame %.2f s after the stream was lost or first opened",
                            self.camera.id, time.monotonic() - down_since,
                            extra={"down_s": round(time.monotonic() - down_since, 3)})
            frames += 1
            with self._lock:
                sequence = self._count_frame()
                if now - last_passed < min_interval:
                    continue  # subsampled (max_fps), not a drop
                last_passed = now
                frame = Frame(
                    image=image,
                    timestamp=now,
                    source_id=self.camera.id,
                    sequence=sequence,
                )
                if self._queue.put_latest(frame):
                    self._frames_dropped += 1
        return frames

    def _open_replay(self) -> None:
        reader = _open_reader(self.camera, self.kind)
        first = reader.read()
        if first is None:
            reader.close()
            raise SourceError(
                f"no decodable frames in {self.camera.url} (corrupt or unsupported)"
            )
        self._replay_reader, self._first_image = reader, first

    def _close_replay(self) -> None:
        if self._replay_reader is not None:
            self._replay_reader.close()
            self._replay_reader = None

    def _run_replay(self) -> None:
        reader = self._replay_reader
        assert reader is not None, "start() opens the replay"
        realtime = self.camera.replay_pace is ReplayPace.REALTIME
        frame_period = 1.0 / reader.fps
        start = time.time()
        self._set_state(SourceState.STREAMING)
        image, self._first_image = self._first_image, None
        index = 0  # media frame index, continuing across loops
        frames_this_pass = 0
        while image is not None and not self._stop_event.is_set():
            timestamp = start + index * frame_period
            if realtime:
                delay = timestamp - time.time()
                if delay > 0 and self._stop_event.wait(delay):
                    break
            with self._lock:
                self._count_frame()
                frame = Frame(
                    image=image,
                    timestamp=timestamp,
                    source_id=self.camera.id,
                    sequence=index,
                )
                if realtime and self._queue.put_latest(frame):
                    self._frames_dropped += 1
            if not realtime and not self._queue.put_wait(frame, self._stop_event):
                break
            index += 1
            frames_this_pass += 1
            image = reader.read()
            if image is None:
                _check_whole_pass(reader, frames_this_pass, self.camera.url)
            if image is None and self.camera.loop and frames_this_pass:
                reader.rewind()
                frames_this_pass = 0
                image = reader.read()
        if not self._stop_event.is_set():
            logger.info(
                "camera %s: replay of %s complete (%d frames)",
                self.camera.id,
                self.camera.url,
                index,
            )


def _check_whole_pass(reader: _Reader, frames: int, url: str) -> None:
    """A file that stops decoding well before the frame count in its header is cut short or
    damaged, not ended: FFmpeg reports both as the end of the stream. The slack allows for a last
    frame or two that do not decode in a whole file (an edit list, a final partial frame)."""
    claimed = reader.frames_claimed
    if claimed is not None and frames < claimed - max(2, claimed // 50):
        raise SourceError(f"{url}: decoding stopped at frame {frames} of the {claimed} its header "
                          "lists (the file is cut short or damaged)")


def open_source(
    camera: CameraConfig, stop_event: threading.Event | None = None
) -> FrameSource:
    """Create and start the :class:`FrameSource` of ``camera``.

    Raises
    ------
    SourceError
        A video file that is missing, unreadable or has no decodable frame, or an image folder
        that is missing or holds no image. Live sources never raise: they keep reconnecting.
    """
    source = FrameSource(camera, stop_event)
    source.start()
    return source
