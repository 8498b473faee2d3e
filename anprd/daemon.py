"""``anprd run``: cameras -> detector -> tracker -> plate events on ZeroMQ, as a systemd service.

Threads:

- one capture thread per camera (`anprd.grabber.FrameSource`) fills a small queue;
- one *inference worker* takes frames from the cameras round-robin and runs each camera's
  `anprd.pipeline.CameraPipeline` (one detector per process: TensorFlow already uses every core,
  and the GPU when it sees one);
- the *main thread* does everything else: signals, sd_notify (READY, STATUS, WATCHDOG,
  RELOADING, STOPPING), metrics, config reloads and the shutdown drain.

Signal handlers only record the signal and wake the main loop through a pipe (a handler that
took a lock could deadlock against the code it interrupted). SIGTERM/SIGINT start a graceful
drain, bounded by ``notify.drain_timeout_s``: sources stop, queued frames are processed, trackers
are flushed so tracks still in view publish their final events, and the publisher lingers to
deliver them; a second signal cuts the drain short (trackers are still flushed). SIGHUP re-reads
the config file and applies what changed; a config that does not load, or whose model, source or
endpoint cannot be opened, is logged as one line and the running config stays.

When every source has ended (video files and folders without ``loop``) the daemon drains and
exits by itself.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from anprd.config import AnprdConfig, CameraConfig, ConfigError, load_config, mask_url
from anprd.config.detector import DetectorConfig
from anprd.ctc import parse_pattern
from anprd.detector import PlateDetector, resolve_model_dir
from anprd.errors import AnprdError
from anprd.events import EventSequencer
from anprd.formats import CountryPrior
from anprd.grabber import FrameSource, SourceError, SourceState, open_source
from anprd.logs import NativeStderr, redact_plate, setup_logging
from anprd.metrics import Metrics, MetricsServer, start_metrics_server
from anprd.notify import Notifier, Watchdog, default_notifier, format_status
from anprd.pipeline import CameraPipeline, warm_up
from anprd.publisher import EventPublisher, PublisherError
from anprd.types import PlateEvent
from cascade.frame import video_prefilter

__all__ = ["Daemon", "run_daemon"]

logger = logging.getLogger(__name__)

# Main loop period: watchdog pings, READY and exit checks are at most this late.
_MAIN_TICK_S = 0.25
# Inference worker's sleep when no camera has a frame (the sources have no shared wake-up).
_IDLE_POLL_S = 0.01
_METRICS_SYNC_S = 1.0
# After an aborted drain, how long the worker may take to finish its frame and flush trackers.
_ABORT_GRACE_S = 5.0
# Re-binding the same endpoint right after closing it can briefly fail while ZeroMQ tears down.
_REBIND_WINDOW_S = 2.0
_REBIND_RETRY_S = 1.0  # after that, how often the main loop tries again
# A frame whose processing raises is skipped; this many in a row means the worker itself is broken,
# and it fails so that systemd restarts the daemon. Failures are logged at most this often.
_MAX_FAILED_FRAMES = 100
_FAILED_FRAME_LOG_S = 60.0
# Detector settings fixed when the model is loaded; a change loads the model again (not `threads`:
# TensorFlow's thread pools are made once per process, so a new model would not use them either);
# the plate widths set the proposal network's levels when it is loaded.
_DETECTOR_LOAD_FIELDS = ("device", "prefilter", "prefilter_model", "reader", "min_plate_width",
                         "max_plate_width", "model_formats")


class _Waker:
    """A self-pipe: ``wake()`` is safe in signal handlers and other threads; ``wait()`` blocks the
    main loop until a wake-up or a timeout."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        # A full pipe means a wake-up is already pending; a closed one, that nobody waits.
        with contextlib.suppress(OSError):
            os.write(self._write_fd, b"\0")

    def wait(self, timeout: float) -> None:
        try:
            readable, _, _ = select.select([self._read_fd], [], [], max(0.0, timeout))
        except InterruptedError:
            return
        if readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._read_fd, 512):
                    pass

    def close(self) -> None:
        # Once only: a closed descriptor number may already belong to another file.
        for fd in (self._read_fd, self._write_fd):
            if fd >= 0:
                os.close(fd)
        self._read_fd = self._write_fd = -1


@dataclass
class _Camera:
    """One camera's running parts. ``finished``: its source ended and its tracker was flushed."""

    config: CameraConfig
    source: FrameSource
    pipeline: CameraPipeline
    finished: bool = False
    status_frames: int = 0  # pipeline.frames_processed at the last STATUS line


@dataclass
class _ReloadPlan:
    """What a reload needs that can fail, prepared before anything running is touched."""

    config: AnprdConfig
    detector: PlateDetector | None  # None: keep the loaded model
    publisher: EventPublisher | None  # None: keep, or rebuild in place (same endpoint)
    rebuild_publisher: bool
    sources: dict[str, FrameSource]  # cameras whose source is (re)opened


def _source_settings(camera: CameraConfig) -> dict[str, object]:
    # Everything but these is read when a source opens; these only concern the pipeline.
    return camera.model_dump(exclude={"mask", "event_crop"})


def _detector_needs_load(old: DetectorConfig, new: DetectorConfig, loaded_dir: Path, base_dir: Path) -> bool:
    if any(getattr(old, name) != getattr(new, name) for name in _DETECTOR_LOAD_FIELDS):
        return True
    return resolve_model_dir(new.model, base_dir) != loaded_dir


def _retune_detector(detector: PlateDetector, config: DetectorConfig) -> None:
    """Apply thresholds and patterns to the loaded model. The detector reads ``config`` and
    ``patterns`` on every call, so this takes effect from the next frame."""
    detector.patterns = [parse_pattern(name, spec) for name, spec in config.patterns.items()]
    detector.country_prior = CountryPrior(config.countries)
    detector.config = config


def _stop_sources(sources: Sequence[FrameSource], timeout_s: float) -> None:
    """Stop sources concurrently: a hung network camera must not delay the others."""
    if not sources:
        return
    timeout_s = max(0.1, timeout_s)
    threads = [
        threading.Thread(target=source.stop, args=(timeout_s,), name=f"stop-{source.camera.id}", daemon=True)
        for source in sources
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s + 1.0
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def _camera_word(camera: _Camera) -> str:
    state = camera.source.state
    if camera.finished or state in (SourceState.ENDED, SourceState.FAILED):
        return "failed" if state is SourceState.FAILED else "ended"
    return "up" if state is SourceState.STREAMING else state.value


class Daemon:
    """The running service; `run_daemon` is the usual entry point.

    Call :meth:`start` (loads the model, binds the publisher, opens the sources; raises the
    startup errors), then :meth:`run` (returns the exit status), and :meth:`close` in any case.
    :meth:`request_stop` and :meth:`request_reload` are what the signal handlers call.
    """

    def __init__(
        self, config_path: Path, config: AnprdConfig, *, notifier: Notifier, metrics: Metrics
    ) -> None:
        self._config_path = config_path
        self._base_dir = config_path.absolute().parent
        self._config = config
        self._notifier = notifier
        self._metrics = metrics
        self._watchdog = Watchdog(notifier, stall_timeout_s=config.notify.stall_timeout_s)
        self._sequencer = EventSequencer()
        self._waker = _Waker()
        self._metrics_server: MetricsServer | None = None
        self._detector: PlateDetector | None = None
        self._publisher: EventPublisher | None = None
        self._cameras: dict[str, _Camera] = {}
        # Held by the worker for one frame at a time, and by the main thread to change cameras.
        self._lock = threading.Lock()
        self._main_waiting = threading.Event()  # worker yields the lock while set
        self._first_frame = threading.Event()
        self._draining = threading.Event()  # no new frames come: finish queued ones, then exit
        self._abort = threading.Event()  # stop processing at once (trackers are still flushed)
        self._worker: threading.Thread | None = None
        self._worker_failed = False
        self._shut_down = False
        self._failed_frames_in_a_row = 0
        self._failed_frame_logged_at = -math.inf
        self._next_camera = 0
        # Written by signal handlers (main thread), read by the main loop: plain values, no locks.
        self._stop_signals = 0
        self._reload_pending = False
        self._ready = False
        self._status_time = time.monotonic()  # when the last STATUS line's fps window began

    # --- signals ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin the graceful drain; a second call cuts it short."""
        self._stop_signals += 1
        self._waker.wake()

    def request_reload(self) -> None:
        """Re-read the config file at the next main-loop turn."""
        self._reload_pending = True
        self._waker.wake()

    # --- start-up ---------------------------------------------------------------------------

    def start(self) -> None:
        """Serve metrics, load the model, bind the publisher, open the sources, start the worker.

        Raises
        ------
        ModelError, PublisherError, SourceError, MetricsServerError
            One-line errors; call :meth:`close` afterwards.
        """
        config = self._config
        self._metrics.set_not_ready("starting")
        self._metrics_server = start_metrics_server(self._metrics, config.metrics)
        for camera in config.cameras:
            self._metrics.add_camera(camera.id)
        self._notifier.status("loading model")
        self._detector = PlateDetector.from_config(config.detector, self._base_dir)
        warm_up(self._detector)
        self._publisher = EventPublisher(config.publisher)
        self._sequencer.advance_to(self._publisher.next_sequence)  # numbering goes on from the spool
        # Sources open last: a realtime replay's clock starts when it opens.
        sources = self._open_sources(config.cameras)
        for camera in config.cameras:
            self._cameras[camera.id] = _Camera(camera, sources[camera.id], self._new_pipeline(camera))
        self._notifier.status("waiting for the first frame")
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._worker.start()

    def _open_sources(self, cameras: Sequence[CameraConfig]) -> dict[str, FrameSource]:
        opened: dict[str, FrameSource] = {}
        try:
            for camera in cameras:
                opened[camera.id] = open_source(camera)
                logger.info("camera %s: opened %s (%s)", camera.id, mask_url(camera.url), camera.kind.value)
        except SourceError:
            _stop_sources(list(opened.values()), 1.0)
            raise
        return opened

    def _new_pipeline(self, camera: CameraConfig) -> CameraPipeline:
        assert self._detector is not None
        return CameraPipeline(
            camera, self._detector, self._config.tracker, self._sequencer, self._publish, self._metrics,
            cascade=self._config.cascade,
        )

    def _publish(self, event: PlateEvent) -> None:
        """Hand one event to the publisher (called by pipelines, on the worker or during reload)."""
        publisher = self._publisher
        if publisher is None:
            logger.error("event %s lost: no publisher (see the earlier reload error)", event.event_id)
            return
        try:
            delivered = publisher.publish(event)
        except PublisherError as exc:
            # Keep reading plates; the error is logged per event so the loss is visible.
            logger.error("event %s not published: %s", event.event_id, exc)
            return
        self._metrics.event_published(event.camera_id)
        if not delivered:  # a subscriber's queue was full (publisher.sndhwm); logged there
            self._metrics.subscriber_overflowed()
        logger.info(
            "camera %s: plate %s confidence %.3f over %d frames%s (event %d)",
            event.camera_id,
            redact_plate(event.plate, self._config.logging.log_plates),
            event.confidence,
            event.frames_seen,
            " provisional" if event.provisional else "",
            event.sequence,
        )

    # --- inference worker -------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while not self._abort.is_set():
                self._watchdog.worker_looped()
                if self._main_waiting.is_set():
                    time.sleep(0.001)  # let the main thread take the lock (Lock is not fair)
                    continue
                if self._step():
                    continue
                if self._draining.is_set() and self._all_finished():
                    break
                self._abort.wait(_IDLE_POLL_S)
        except Exception:
            logger.exception("inference worker failed")
            self._worker_failed = True
        finally:
            self._flush_unfinished()
            self._waker.wake()

    def _step(self) -> bool:
        """Process one frame from the next camera that has one; False when none had a frame."""
        with self._lock:
            cameras = [camera for camera in self._cameras.values() if not camera.finished]
            for offset in range(len(cameras)):
                camera = cameras[(self._next_camera + offset) % len(cameras)]
                frame = camera.source.read(timeout=0)
                if frame is None:
                    if camera.source.done:
                        self._finish(camera)
                    elif camera.source.state is SourceState.RECONNECTING:
                        camera.pipeline.expire(time.time())  # the camera is down: end its tracks
                    continue
                if not self._first_frame.is_set():
                    self._first_frame.set()
                    self._waker.wake()
                try:
                    camera.pipeline.process(frame)
                except Exception:
                    if self._frame_failed(camera):
                        raise  # frames keep failing: `_work` reports the worker as failed
                else:
                    self._failed_frames_in_a_row = 0
                    self._watchdog.frame_advanced()
                self._next_camera = (self._next_camera + offset + 1) % len(cameras)
                return True
        return False

    def _frame_failed(self, camera: _Camera) -> bool:
        """Count and log (at most every `_FAILED_FRAME_LOG_S`) a frame whose processing raised, in
        its `except`; True when `_MAX_FAILED_FRAMES` failed in a row. One odd frame must not stop
        every camera, but frames that keep failing mean the worker is broken."""
        self._failed_frames_in_a_row += 1
        self._metrics.frame_failed(camera.config.id)
        if self._failed_frames_in_a_row >= _MAX_FAILED_FRAMES:
            return True
        now = time.monotonic()
        if now - self._failed_frame_logged_at >= _FAILED_FRAME_LOG_S:
            self._failed_frame_logged_at = now
            logger.exception("camera %s: a frame failed and was skipped (anprd_frames_failed_total "
                             "counts them)", camera.config.id)
        return False

    def _finish(self, camera: _Camera) -> None:
        """The source ended and its queue is empty: report the tracks still open."""
        camera.pipeline.flush()
        camera.finished = True
        state = camera.source.state
        if state is SourceState.FAILED:
            logger.error("camera %s: source failed after %d frames: %s", camera.config.id,
                         camera.pipeline.frames_processed, camera.source.failure or "see above")
        else:
            logger.info("camera %s: source ended after %d frames", camera.config.id,
                        camera.pipeline.frames_processed)
        self._waker.wake()

    def _flush_unfinished(self) -> None:
        with self._lock:
            for camera in self._cameras.values():
                if camera.finished:
                    continue
                try:
                    camera.pipeline.flush()
                except Exception:
                    logger.exception("camera %s: flushing tracks failed", camera.config.id)
                camera.finished = True

    def _all_finished(self) -> bool:
        return all(camera.finished for camera in list(self._cameras.values()))

    # --- main loop --------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until a stop signal or the end of every source; returns the exit status."""
        last_metrics = last_status = last_bind = time.monotonic()
        while True:
            if self._stop_signals:
                return self._shutdown("stop signal")
            if self._reload_pending:
                self._reload_pending = False
                self._reload()
            if self._publisher is None and time.monotonic() - last_bind >= _REBIND_RETRY_S:
                self._bind_publisher_again()
                last_bind = time.monotonic()
            if self._worker_failed or (self._worker is not None and not self._worker.is_alive()):
                self._shutdown("inference worker failed")
                return 1
            if not self._ready and (self._first_frame.is_set() or self._cameras_down(first_try_failed=True)):
                self._become_ready()
            self._watchdog.tick(cameras_down=self._cameras_down())
            now = time.monotonic()
            if now - last_metrics >= _METRICS_SYNC_S:
                self._sync_metrics()
                last_metrics = now
            if now - last_status >= self._config.notify.status_interval_s:
                self._notifier.status(self._status_line())
                last_status = now
            if self._all_finished():
                failed = any(c.source.state is SourceState.FAILED for c in self._cameras.values())
                status = self._shutdown("every source has ended")
                return 1 if failed else status
            self._waker.wait(_MAIN_TICK_S)

    def _cameras_down(self, first_try_failed: bool = False) -> bool:
        """Every camera still running is live and down, being reconnected on schedule (with
        `first_try_failed`, each has also failed its first open); False with none running."""
        running = [camera.source for camera in list(self._cameras.values()) if not camera.finished]
        return bool(running) and all(
            source.reconnecting_on_schedule()
            and (not first_try_failed or source.state is SourceState.RECONNECTING)
            for source in running)

    def _bind_publisher_again(self) -> None:
        """A reload left no publisher (its endpoint taken meanwhile): events are lost, and logged,
        until this binds again."""
        try:
            self._publisher = EventPublisher(self._config.publisher)
        except PublisherError:
            return
        self._sequencer.advance_to(self._publisher.next_sequence)
        logger.info("event publisher bound again on %s", self._config.publisher.endpoint)
        if self._ready:
            self._metrics.set_ready()

    def _become_ready(self) -> None:
        self._ready = True
        self._metrics.set_ready()
        self._notifier.ready(self._status_line())
        if self._first_frame.is_set():
            logger.info("ready: model loaded and first frame read")
        else:  # a camera host that boots before its cameras must still start
            logger.warning("ready: model loaded; no camera reachable yet, reconnecting")

    def _status_line(self) -> str:
        now = time.monotonic()
        elapsed = max(1e-6, now - self._status_time)
        self._status_time = now
        fps: dict[str, float] = {}
        states: dict[str, str] = {}
        for camera in list(self._cameras.values()):
            processed = camera.pipeline.frames_processed
            fps[camera.config.id] = max(0, processed - camera.status_frames) / elapsed
            camera.status_frames = processed
            states[camera.config.id] = _camera_word(camera)
        return format_status(fps, states)

    def _sync_metrics(self) -> None:
        for camera in list(self._cameras.values()):
            stats = camera.source.stats()
            self._metrics.observe_source(
                camera.config.id, stats.frames_read, stats.frames_dropped, stats.reconnects, stats.queue_depth
            )
            self._metrics.set_camera_up(camera.config.id, stats.state is SourceState.STREAMING)

    # --- shutdown ---------------------------------------------------------------------------

    def _shutdown(self, reason: str) -> int:
        """Drain: stop sources, finish queued frames, flush trackers, stop the publisher."""
        self._shut_down = True
        logger.info("stopping (%s): draining for up to %.1f s", reason, self._config.notify.drain_timeout_s)
        self._notifier.stopping(f"stopping: {reason}")
        self._metrics.set_not_ready("stopping")
        deadline = time.monotonic() + self._config.notify.drain_timeout_s
        self._draining.set()
        _stop_sources([camera.source for camera in self._cameras.values()], deadline - time.monotonic())
        worker = self._worker
        if worker is not None:
            while worker.is_alive() and time.monotonic() < deadline and self._stop_signals < 2:
                worker.join(0.1)
            if worker.is_alive():
                why = "second stop signal" if self._stop_signals >= 2 else "drain timeout"
                logger.warning("%s: dropping queued frames, flushing trackers", why)
                self._abort.set()
                worker.join(_ABORT_GRACE_S)
                if worker.is_alive():
                    logger.error("inference worker still busy; events of live tracks are lost")
        self._sync_metrics()
        self._close_outputs()
        published = self._sequencer.last
        logger.info("stopped after %d events", published)
        return 1 if self._worker_failed else 0

    def _close_outputs(self) -> None:
        if self._publisher is not None:
            self._publisher.stop()  # lingers up to publisher.linger_ms to deliver the last events
            self._publisher = None
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None

    def close(self) -> None:
        """Release everything (after a failed :meth:`start`, or after :meth:`run`); idempotent."""
        self._abort.set()
        if not self._shut_down:  # `_shutdown` already stopped them and waited its share of the stop
            if self._cameras:
                _stop_sources([camera.source for camera in self._cameras.values()], 1.0)
            if self._worker is not None:
                self._worker.join(_ABORT_GRACE_S)
        self._close_outputs()
        self._waker.close()

    # --- reload -----------------------------------------------------------------------------

    def _reload(self) -> None:
        try:
            new = load_config(self._config_path)
        except ConfigError as exc:
            logger.error("config reload failed, keeping the running config: %s", exc)
            return
        old = self._config
        changed = [name for name in AnprdConfig.model_fields if getattr(old, name) != getattr(new, name)]
        if not changed:
            logger.info("config reload: %s unchanged", self._config_path)
            return
        if self._ready:
            self._notifier.reloading()
        self._metrics.set_not_ready("reloading")
        try:
            plan = self._prepare(new)
        except AnprdError as exc:  # a model, port or camera of the new config that cannot be used
            logger.error("config reload failed, keeping the running config: %s", exc)
        except Exception:  # unforeseen (memory for a second model): the cameras must go on
            logger.exception("config reload failed, keeping the running config")
        else:
            retired = self._commit(plan)
            _stop_sources(retired, min(5.0, self._config.notify.drain_timeout_s))
            logger.info("config reloaded from %s (changed: %s)", self._config_path, ", ".join(changed))
        if self._ready:
            self._metrics.set_ready()
            self._notifier.ready(self._status_line())
        else:
            self._metrics.set_not_ready("starting")
        if self._publisher is None:
            self._metrics.set_not_ready("no event publisher: binding again every second")

    def _prepare(self, new: AnprdConfig) -> _ReloadPlan:
        """Load, bind and open what the new config needs; undoes its own work if one part fails."""
        old = self._config
        assert self._detector is not None
        detector = None
        if _detector_needs_load(old.detector, new.detector, self._detector.model_dir, self._base_dir):
            detector = PlateDetector.from_config(new.detector, self._base_dir)
            warm_up(detector)
        (detector or self._detector).load_prefilter(video_prefilter(new.cascade))
        if new.detector.threads != old.detector.threads:
            logger.warning("detector.threads takes effect at the next start: TensorFlow's thread "
                           "pools are made once per process")
        publisher = None
        rebuild_publisher = False
        if new.publisher != old.publisher:
            # The same catch-up endpoint cannot be bound beside the old one either.
            same_catchup = (new.publisher.catchup_endpoint is not None
                            and new.publisher.catchup_endpoint == old.publisher.catchup_endpoint)
            if (new.publisher.endpoint, new.publisher.mode) != (old.publisher.endpoint, old.publisher.mode) \
                    and not same_catchup:
                publisher = EventPublisher(new.publisher)  # binds beside the old one
            else:
                rebuild_publisher = True  # same endpoint: the old socket must close first
        sources: dict[str, FrameSource] = {}
        try:
            for camera in new.cameras:
                running = self._cameras.get(camera.id)
                if running is None or _source_settings(running.config) != _source_settings(camera):
                    sources[camera.id] = open_source(camera)
        except Exception:
            _stop_sources(list(sources.values()), 1.0)
            if publisher is not None:
                publisher.stop()
            raise
        return _ReloadPlan(new, detector, publisher, rebuild_publisher, sources)

    @contextlib.contextmanager
    def _worker_paused(self) -> Iterator[None]:
        self._main_waiting.set()
        try:
            with self._lock:
                yield
        finally:
            self._main_waiting.clear()

    def _commit(self, plan: _ReloadPlan) -> list[FrameSource]:
        """Swap in the prepared parts between two frames; returns the sources to stop."""
        new, old = plan.config, self._config
        retired: list[FrameSource] = []
        old_publisher: EventPublisher | None = None
        if new.logging != old.logging:
            setup_logging(new.logging.level, new.logging.format)
        with self._worker_paused():
            assert self._detector is not None
            if plan.detector is not None:
                self._detector = plan.detector
            else:
                _retune_detector(self._detector, new.detector)
            wanted = {camera.id for camera in new.cameras}
            # Tracks of removed or re-opened cameras end here; their events go out on the old
            # publisher, whose subscribers are the ones listening.
            for camera_id in [c for c in self._cameras if c not in wanted]:
                camera = self._cameras.pop(camera_id)
                if not camera.finished:
                    camera.pipeline.flush()
                retired.append(camera.source)
                self._metrics.remove_camera(camera_id)
                logger.info("camera %s: removed", camera_id)
            self._config = new  # new pipelines take the new tracker config and log_plates
            cameras: dict[str, _Camera] = {}
            for config in new.cameras:
                running = self._cameras.get(config.id)
                source = plan.sources.get(config.id)
                if source is not None:
                    if running is not None:
                        if not running.finished:
                            running.pipeline.flush()
                        retired.append(running.source)
                        self._metrics.reset_source(config.id)  # the new grabber counts from zero
                    else:
                        self._metrics.add_camera(config.id)
                    pipeline = self._new_pipeline(config)
                    if running is not None:  # the same camera: a car still in view is not new
                        pipeline.take_recent_reports(running.pipeline)
                    cameras[config.id] = _Camera(config, source, pipeline)
                    logger.info("camera %s: opened %s", config.id, mask_url(config.url))
                    continue
                assert running is not None
                running.config = config
                running.pipeline.set_camera(config)
                running.pipeline.detector = self._detector
                running.pipeline.set_cascade_config(new.cascade)
                if new.tracker != running.pipeline.tracker_config:
                    running.pipeline.set_tracker_config(new.tracker)
                cameras[config.id] = running
            self._cameras = cameras
            self._next_camera = 0
            if plan.publisher is not None:
                old_publisher, self._publisher = self._publisher, plan.publisher
            elif plan.rebuild_publisher:
                self._publisher = self._rebuild_publisher(old, new)
        if old_publisher is not None:
            old_publisher.stop()
        if self._publisher is not None:  # a new spool may carry a higher number on
            self._sequencer.advance_to(self._publisher.next_sequence)
        if new.notify.stall_timeout_s != old.notify.stall_timeout_s:
            self._watchdog = Watchdog(self._notifier, stall_timeout_s=new.notify.stall_timeout_s)
            self._watchdog.frame_advanced()  # keep pinging: frames were advancing a moment ago
        if new.metrics != old.metrics:
            logger.warning("metrics settings change on restart only; still serving the old endpoint")
        return retired

    def _rebuild_publisher(self, old: AnprdConfig, new: AnprdConfig) -> EventPublisher | None:
        """Same endpoint, other settings: close the old socket, bind again (the old config's
        settings if the new ones fail)."""
        if self._publisher is not None:
            self._publisher.stop()
            self._publisher = None
        last_error: PublisherError | None = None
        for config, label in ((new.publisher, "new"), (old.publisher, "old")):
            deadline = time.monotonic() + _REBIND_WINDOW_S
            while True:
                try:
                    publisher = EventPublisher(config)
                except PublisherError as exc:
                    last_error = exc
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.1)
                    continue
                if label == "old":
                    logger.error("publisher settings not applied, kept the old ones: %s", last_error)
                return publisher
        logger.error("no event publisher: %s", last_error)
        return None


# --- entry point ----------------------------------------------------------------------------


def _print_error(exc: Exception) -> None:
    print(f"anprd run: {exc}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _signal_handlers(daemon: Daemon) -> Iterator[None]:
    def on_stop(signum: int, frame: FrameType | None) -> None:
        daemon.request_stop()

    def on_reload(signum: int, frame: FrameType | None) -> None:
        daemon.request_reload()

    handlers = {signal.SIGTERM: on_stop, signal.SIGINT: on_stop, signal.SIGHUP: on_reload}
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_daemon(config_path: Path) -> int:
    """Run the daemon on ``config_path``; returns the exit status.

    0: stopped by SIGTERM/SIGINT or every source ended; 1: a source or the inference worker
    failed; 2: the daemon could not start (bad config, model, source, endpoint or metrics port;
    one line on stderr).
    """
    config_path = Path(config_path)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _print_error(exc)
        return 2
    setup_logging(config.logging.level, config.logging.format)
    # FFmpeg's and OpenCV's own lines (why a camera failed to open) become log records.
    native_stderr = NativeStderr().start()
    metrics = Metrics()
    daemon = Daemon(config_path, config, notifier=default_notifier(), metrics=metrics)
    try:
        with _signal_handlers(daemon):
            try:
                daemon.start()
            except AnprdError as exc:  # a config, model, camera or port the user can fix
                _print_error(exc)
                return 2
            return daemon.run()
    finally:
        daemon.close()
        native_stderr.stop()
