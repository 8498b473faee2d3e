"""One camera's processing: frame -> detections (masked) -> tracker -> plate events.

`CameraPipeline` is the only place the stages meet, and it passes nothing but the dataclasses of
`anprd.types` between them:

    Frame --detector--> Detection* --mask--> Detection* --tracker--> TrackerUpdate
          --EventEmitter--> PlateEvent* --publish()-->

Both ``anprd run`` (`anprd.daemon`, many cameras sharing one detector on one inference thread)
and ``anprd replay`` (`anprd.replay`, one video file as fast as it decodes) drive it frame by frame
with :meth:`CameraPipeline.process`, and call :meth:`CameraPipeline.flush` when a source ends or
the process stops, so that tracks still in view give their final events.

A pipeline is not thread-safe: one thread at a time calls it (the daemon's inference worker).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from anprd.config.cascade import CascadeConfig
from anprd.config.source import CameraConfig
from anprd.config.tracker import TrackerConfig
from anprd.events import EventEmitter, EventSequencer
from anprd.tracker import Tracker, TrackerUpdate
from anprd.types import Box, Detection, Frame, PlateEvent
from cascade import FrameCascade, SearchPlan

if TYPE_CHECKING:
    from anprd.detector import PlateDetector
    from anprd.formats import CountryPrior, FormatPrior
    from anprd.metrics import Metrics

__all__ = [
    "CROP_JPEG_QUALITY",
    "CameraPipeline",
    "Detector",
    "ProcessedFrame",
    "apply_mask",
    "mask_contours",
    "warm_up",
]

logger = logging.getLogger(__name__)

CROP_JPEG_QUALITY = 90
# Context kept around a plate crop, as a fraction of the box size on each side.
_CROP_MARGIN = 0.15


class Detector(Protocol):
    """What the pipeline needs of a detector (`anprd.detector.PlateDetector` is one). A detector
    whose `detect` also takes a `plan` (`cascade.SearchPlan`) is driven by the camera's search
    cascade; one that does not sees every frame whole."""

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Plates in a BGR uint8 image, most confident first."""
        ...


def _takes_plans(detector: Detector) -> bool:
    """Whether `detector.detect` takes a search plan (and, with it, a grayscale frame)."""
    try:
        return "plan" in inspect.signature(detector.detect).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no way to ask, so no plans
        return False


@dataclass(frozen=True)
class ProcessedFrame:
    """What one frame gave.

    frame: the input frame. detections: the plates kept after the camera's mask, most confident
    first. track_ids: the tracker's id for each of ``detections`` (same order). masked: the
    detections dropped because their box centre lies in a mask polygon. update: the tracker's
    transitions for this frame. events: the events this frame caused, already published.
    inference_s: seconds spent in the detector.
    """

    frame: Frame
    detections: tuple[Detection, ...]
    track_ids: tuple[int, ...]
    masked: tuple[Detection, ...]
    update: TrackerUpdate
    events: tuple[PlateEvent, ...]
    inference_s: float
    plan: SearchPlan | None = None


def mask_contours(polygons: Sequence[Sequence[tuple[float, float]]] | None) -> list[np.ndarray]:
    """Camera mask polygons as OpenCV contours (N x 1 x 2 float32) for `cv2.pointPolygonTest`."""
    return [np.asarray(polygon, dtype=np.float32).reshape(-1, 1, 2) for polygon in polygons or ()]


def apply_mask(
    detections: Sequence[Detection], contours: Sequence[np.ndarray]
) -> tuple[list[Detection], list[Detection]]:
    """Split detections into (kept, dropped): dropped ones have their box centre inside, or on
    the edge of, a mask polygon."""
    if not contours:
        return list(detections), []
    kept: list[Detection] = []
    dropped: list[Detection] = []
    for detection in detections:
        centre = tuple(float(v) for v in detection.box.center)
        inside = any(cv2.pointPolygonTest(contour, centre, False) >= 0 for contour in contours)
        (dropped if inside else kept).append(detection)
    return kept, dropped


def warm_up(detector: PlateDetector) -> None:
    """Run both of the detector's networks once on a blank image, so that TensorFlow builds its
    graphs now rather than on the first frames (which a realtime source would then drop)."""
    blank = np.zeros((2 * 64, 2 * 128), np.uint8)
    detector.detect(blank)  # the pyramid's detection network
    detector.read([(96.0, 48.0, 160.0, 80.0)], blank)  # the re-reading network (no plate: none kept)


@dataclass
class _BestCrop:
    score: float
    image: np.ndarray


def _crop(image: np.ndarray, box: Box) -> np.ndarray | None:
    """The plate with a small margin, copied out of the frame (the frame is not kept)."""
    height, width = image.shape[:2]
    margin_x, margin_y = box.w * _CROP_MARGIN, box.h * _CROP_MARGIN
    x0, y0 = max(0, int(box.x - margin_x)), max(0, int(box.y - margin_y))
    x1, y1 = min(width, int(np.ceil(box.x2 + margin_x))), min(height, int(np.ceil(box.y2 + margin_y)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return image[y0:y1, x0:x1].copy()


class CameraPipeline:
    """Detection, masking, tracking and event emission for one camera.

    Parameters
    ----------
    camera
        The camera: its ``id`` names tracks and events, its ``mask`` polygons drop detections,
        and with ``event_crop`` each event carries a JPEG crop of its plate (most confident frame).
    detector
        Finds plates in a frame; may be shared by several pipelines on one thread.
    tracker_config
        Settings of this camera's `Tracker`.
    sequencer
        The process-wide event counter (shared by every camera).
    publish
        Called with each event, in order, as soon as it is made.
    metrics
        When given: frames processed, inference time and active tracks are recorded.
    cascade
        The search cascade's settings (`anprd.config.cascade.CascadeConfig`): each frame's search is
        planned from motion, the live tracks and a schedule (`cascade.FrameCascade`). None, or a
        detector whose `detect` takes no plan: every frame is searched whole, as a still image.
    """

    def __init__(
        self,
        camera: CameraConfig,
        detector: Detector,
        tracker_config: TrackerConfig,
        sequencer: EventSequencer,
        publish: Callable[[PlateEvent], None],
        metrics: Metrics | None = None,
        cascade: CascadeConfig | None = None,
    ) -> None:
        self._camera = camera
        self._contours = mask_contours(camera.mask)
        self._cascade = FrameCascade(cascade, self._contours) if cascade is not None else None
        self.detector = detector
        self._load_prefilter()
        self._sequencer = sequencer
        self._publish = publish
        self._metrics = metrics
        self._tracker = Tracker(tracker_config, camera.id, prior=self._country_prior)
        self._emitter = EventEmitter(sequencer)
        self._best_crops: dict[int, _BestCrop] = {}
        self._last_time: float | None = None
        self._last_number = 0
        self.frames_processed = 0

    def _load_prefilter(self) -> None:
        """Have the detector load the cascade's pre-filter now (a bad model folder fails here)."""
        load = getattr(self.detector, "load_prefilter", None)
        if self._cascade is not None and load is not None:
            load(self._cascade.prefilter)

    def _country_prior(self) -> CountryPrior | FormatPrior | None:
        """The detector's country formats now (a reload may change them), else its model's own format
        counts (a fine-tuned folder's), for the tracker's fusion."""
        return getattr(self.detector, "country_prior", None) or getattr(self.detector, "format_prior", None)

    @property
    def camera(self) -> CameraConfig:
        return self._camera

    @property
    def camera_id(self) -> str:
        return self._camera.id

    @property
    def tracker_config(self) -> TrackerConfig:
        return self._tracker.config

    @property
    def active_tracks(self) -> int:
        """Live tracks, confirmed or not."""
        return len(self._tracker.live_tracks)

    def set_camera(self, camera: CameraConfig) -> None:
        """Take a new config of the same camera (a reload): its mask and event_crop matter here."""
        if camera.id != self._camera.id:
            raise ValueError(f"camera id cannot change ({self._camera.id!r} -> {camera.id!r})")
        self._camera = camera
        self._contours = mask_contours(camera.mask)
        if self._cascade is not None:
            self._cascade.set_config(self._cascade.config, self._contours)

    @property
    def cascade(self) -> FrameCascade | None:
        """The camera's search cascade (None: every frame searched whole)."""
        return self._cascade

    def set_cascade_config(self, config: CascadeConfig | None) -> None:
        """Take new cascade settings (a reload); the next frame is searched whole."""
        if config is None:
            self._cascade = None
        elif self._cascade is None:
            self._cascade = FrameCascade(config, self._contours)
        elif config != self._cascade.config:
            self._cascade.set_config(config, self._contours)

    def set_tracker_config(self, config: TrackerConfig) -> tuple[PlateEvent, ...]:
        """Restart tracking with new settings; live tracks are flushed first (their events are
        published and returned), since a tracker's rules cannot change under a live track."""
        events = self.flush()
        earlier, self._tracker = self._tracker, Tracker(config, self._camera.id, prior=self._country_prior)
        self._tracker.take_recent_reports(earlier)
        self._emitter = EventEmitter(self._sequencer)
        return events

    def take_recent_reports(self, earlier: CameraPipeline) -> None:
        """Remember the plates `earlier` (this camera's pipeline before a reload) reported lately,
        so that a car still in view is the same passage, not a new event."""
        self._tracker.take_recent_reports(earlier._tracker)

    def process(self, frame: Frame) -> ProcessedFrame:
        """Detect, mask, track and publish the events of one frame."""
        started = time.perf_counter()
        plan = None
        if self._cascade is not None and _takes_plans(self.detector):
            gray = frame.image if frame.image.ndim == 2 else cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
            predicted = self._tracker.predicted_boxes(frame.timestamp)
            # each track's reading so far: a sure one is read less often (cascade `sure_reading`)
            plan = self._cascade.plan(gray, frame.timestamp, predicted, self.detector.config,  # type: ignore[attr-defined]
                                      self._tracker.readings())
            found = self.detector.detect(gray, plan=plan)  # type: ignore[call-arg]
        else:
            found = self.detector.detect(frame.image)
        inference_s = time.perf_counter() - started
        kept, dropped = apply_mask(found, self._contours)
        update = self._tracker.update(kept, frame.timestamp, frame.sequence)
        track_ids = self._track_ids(kept, update)
        if self._camera.event_crop:
            self._remember_crops(frame.image, kept, track_ids)
        events = self._emit(update)
        self._last_time, self._last_number = frame.timestamp, frame.sequence
        self.frames_processed += 1
        if self._metrics is not None:
            self._metrics.frame_processed(self._camera.id, inference_s)
            self._metrics.set_active_tracks(self._camera.id, self.active_tracks)
        return ProcessedFrame(
            frame=frame,
            detections=tuple(kept),
            track_ids=track_ids,
            masked=tuple(dropped),
            update=update,
            events=events,
            inference_s=inference_s,
            plan=plan,
        )

    def expire(self, now: float) -> tuple[PlateEvent, ...]:
        """End the tracks the camera has not matched for `max_gap_s` by `now` (wall-clock time, as
        live frames carry) while it sends no frames, and publish their final events."""
        if not self._tracker.live_tracks:
            return ()
        events = self._emit(self._tracker.expire(now, self._last_number))
        if self._metrics is not None:
            self._metrics.set_active_tracks(self._camera.id, self.active_tracks)
        return events

    def flush(
        self, frame_time: float | None = None, frame_number: int | None = None
    ) -> tuple[PlateEvent, ...]:
        """End every live track now (source ended, shutdown, reload) and publish their final events.

        ``frame_time`` and ``frame_number`` default to those of the last processed frame.
        """
        if frame_time is None:
            frame_time = self._last_time if self._last_time is not None else time.time()
        if frame_number is None:
            frame_number = self._last_number
        events = self._emit(self._tracker.flush(frame_time, frame_number))
        self._best_crops.clear()
        if self._metrics is not None:
            self._metrics.set_active_tracks(self._camera.id, 0)
        return events

    # --- internals ------------------------------------------------------------------------------

    @staticmethod
    def _track_ids(detections: Sequence[Detection], update: TrackerUpdate) -> tuple[int, ...]:
        # The tracker stores the matched detection's box on its track (a new track starts from
        # it), so identity of the box object links each detection to its track.
        by_box = {
            id(track.box): track.track_id
            for track in (*update.tracks, *update.tentative)
            if track.last_frame == update.frame_number
        }
        return tuple(by_box.get(id(detection.box), 0) for detection in detections)

    def _remember_crops(
        self, image: np.ndarray, detections: Sequence[Detection], track_ids: Sequence[int]
    ) -> None:
        for detection, track_id in zip(detections, track_ids, strict=True):
            score = detection.presence * detection.confidence
            best = self._best_crops.get(track_id)
            if best is not None and best.score >= score:
                continue
            crop = _crop(image, detection.box)
            if crop is not None:
                self._best_crops[track_id] = _BestCrop(score, crop)

    def _crop_jpegs(self, update: TrackerUpdate) -> dict[int, bytes]:
        jpegs: dict[int, bytes] = {}
        for report in (*update.provisional, *update.ended):
            best = self._best_crops.get(report.track.track_id)
            if best is None:
                continue
            ok, encoded = cv2.imencode(".jpg", best.image, [cv2.IMWRITE_JPEG_QUALITY, CROP_JPEG_QUALITY])
            if ok:
                jpegs[report.track.track_id] = encoded.tobytes()
        return jpegs

    def _emit(self, update: TrackerUpdate) -> tuple[PlateEvent, ...]:
        crops = self._crop_jpegs(update) if self._camera.event_crop else None
        events = tuple(self._emitter.events(update, crops))
        for event in events:
            self._publish(event)
        if self._best_crops:
            # Forget crops of tracks that ended (reported or not) or died unconfirmed.
            live = {track.track_id for track in (*update.tracks, *update.tentative)}
            for track_id in [t for t in self._best_crops if t not in live]:
                del self._best_crops[track_id]
        return events
