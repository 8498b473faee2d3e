"""Camera (frame source) configuration: where frames come from and how they are read."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from anprd.config.base import AnprdBaseModel
from anprd.logs import mask_secrets

__all__ = [
    "CameraConfig",
    "FieldRuleError",
    "ReplayPace",
    "SourceKind",
    "mask_url",
    "source_kind",
]

_CAMERA_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
_NETWORK_SCHEMES = {"rtsp": "rtsp", "rtsps": "rtsp", "http": "http", "https": "http"}
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_WEBCAM_DEVICE = re.compile(r"^/dev/video\d+$")
# Query parameters some cameras use to carry credentials (e.g. ?user=admin&password=...).


class FieldRuleError(ValueError):
    """A cross-field rule failed; names the key (dotted, relative to the model) and its value.

    Raised from ``verify_*`` functions so that the config loader can report the exact key
    instead of the model that holds it.
    """

    def __init__(self, key: str, message: str, value: Any) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message
        self.value = value


class SourceKind(StrEnum):
    """What a camera ``url`` points at; decides how it is opened and paced."""

    RTSP = "rtsp"
    HTTP = "http"
    WEBCAM = "webcam"
    FILE = "file"
    FOLDER = "folder"

    @property
    def is_live(self) -> bool:
        """Live sources run at their own pace: newest frame wins, failures reconnect."""
        return self in (SourceKind.RTSP, SourceKind.HTTP, SourceKind.WEBCAM)

    @property
    def is_network(self) -> bool:
        """Network streams: FFmpeg with open and read timeouts."""
        return self in (SourceKind.RTSP, SourceKind.HTTP)


class ReplayPace(StrEnum):
    """How fast a video file or image folder is replayed."""

    REALTIME = "realtime"
    FAST = "fast"


def source_kind(url: str) -> SourceKind:
    """Classify a camera URL.

    An existing directory is a folder and anything else without a scheme is a video file,
    except webcam indexes (``0``) and V4L2 devices (``/dev/videoN``).
    """
    scheme = _URL_SCHEME.match(url)
    if scheme:
        return SourceKind(_NETWORK_SCHEMES[scheme.group(1).lower()])
    if url.isdigit() or _WEBCAM_DEVICE.match(url):
        return SourceKind.WEBCAM
    try:
        folder = Path(url).is_dir()
    except OSError as exc:  # a folder on the way this user may not search (ProtectHome= hides /home)
        raise ValueError(f"cannot look at {url}: {exc.strerror or exc}") from None
    return SourceKind.FOLDER if folder else SourceKind.FILE


def mask_url(url: str) -> str:
    """Return ``url`` with its password (and secret-looking query values) replaced by ``***``.

    Use on every URL that reaches a log message or an error; one masking rule for the whole
    project lives in `anprd.logs.mask_secrets`.

    Examples
    --------
    >>> mask_url("rtsp://admin:hunter2@10.0.0.5:554/stream1")
    'rtsp://admin:***@10.0.0.5:554/stream1'
    """
    return mask_secrets(url)


Point = tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]]
Polygon = Annotated[list[Point], Field(min_length=3)]


class CameraConfig(AnprdBaseModel):
    """One frame source: a network stream, a webcam, a video file or an image folder."""

    id: str = Field(
        pattern=_CAMERA_ID_PATTERN,
        description="Camera name: letters, digits, '_' and '-'; events are published on "
        "topic `plate.<id>`.",
    )
    url: str = Field(
        min_length=1,
        description="`rtsp://`, `rtsps://`, `http(s)://` stream; webcam index (`0`) or "
        "`/dev/videoN`; video file; or folder of images. Relative paths are resolved "
        "against the config file's directory.",
    )
    replay_pace: ReplayPace = Field(
        ReplayPace.REALTIME,
        description="Files and folders only: `realtime` replays at the file's frame rate like "
        "a camera (newest frame wins); `fast` replays flat out without dropping frames.",
    )
    folder_fps: float = Field(
        25.0,
        gt=0,
        description="Frame rate of an image folder (timestamps and realtime pace).",
    )
    loop: bool = Field(
        False,
        description="Files and folders only: restart from the first frame at the end.",
    )
    queue_size: int = Field(
        2,
        ge=1,
        description="Frames buffered between the grabber and the detector; when full, live "
        "sources drop the oldest frame (counted).",
    )
    max_fps: float | None = Field(
        None,
        gt=0,
        description="Live sources only: pass on at most this many frames per second "
        "(all frames are still read, to keep latency low).",
    )
    open_timeout_s: float = Field(
        5.0, gt=0, description="Give up opening a network stream after this many seconds (webcams: "
        "V4L2's own timeout)."
    )
    read_timeout_s: float = Field(
        3.0,
        gt=0,
        description="Treat a network stream as lost when no frame arrives for this long (webcams: "
        "V4L2's own timeout). A read that took nearly this long is a lost stream too: what it "
        "hands back is a stale buffered frame.",
    )
    reconnect_interval_s: float = Field(
        0.25,
        gt=0,
        description="Wait between reconnection attempts during the first `reconnect_fast_for_s` "
        "seconds of an outage. A refused connection costs about a millisecond, so a camera that "
        "restarts streams again within this wait plus its first keyframe (about 1 s).",
    )
    reconnect_fast_for_s: float = Field(
        60.0,
        ge=0,
        description="How long after a stream is lost attempts come every `reconnect_interval_s`; "
        "after that they back off from `reconnect_backoff_min_s`, doubling up to "
        "`reconnect_backoff_max_s`.",
    )
    reconnect_backoff_min_s: float = Field(
        1.0,
        gt=0,
        description="First wait between attempts once `reconnect_fast_for_s` has passed; doubles "
        "each try.",
    )
    reconnect_backoff_max_s: float = Field(
        30.0, gt=0, description="Longest wait between reconnection attempts."
    )
    mask: list[Polygon] | None = Field(
        None,
        description="Polygons (lists of `[x, y]` pixel points) where detections are ignored.",
    )
    event_crop: bool = Field(
        False,
        description="Attach a JPEG crop of each plate (from its most confident frame) to its events "
        "as `crop_jpeg`. Off by default: a crop is personal data, and adds a few kB to each event.",
    )

    @field_validator("id", "url", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        # YAML reads `url: 0` (a webcam) and `id: 1` as integers.
        return (
            str(value)
            if isinstance(value, int) and not isinstance(value, bool)
            else value
        )

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str, info: ValidationInfo) -> str:
        if "\x00" in url:  # no path or URL holds one; it would be printed raw in later errors
            raise ValueError("contains a NUL character")
        scheme = _URL_SCHEME.match(url)
        if scheme:
            if scheme.group(1).lower() not in _NETWORK_SCHEMES:
                raise ValueError(
                    f"unsupported scheme '{scheme.group(1)}' (use rtsp, rtsps, http or https)"
                )
            if not urlsplit(url).hostname:
                raise ValueError("URL has no host")
            return url
        if url.isdigit() or _WEBCAM_DEVICE.match(url):
            return url
        try:
            path = Path(url).expanduser()
        except RuntimeError as exc:  # ~name of a user this host does not have
            raise ValueError(f"cannot expand the path {url!r}: {exc}") from None
        config_dir = (info.context or {}).get("config_dir")
        if not path.is_absolute() and config_dir is not None:
            path = Path(config_dir) / path
        source_kind(str(path))  # a path this user may not look into is an error under this key
        return str(path)

    @model_validator(mode="after")
    def _verify(self) -> CameraConfig:
        verify_backoff(self)
        verify_live_only_options(self)
        return self

    @property
    def kind(self) -> SourceKind:
        """What ``url`` points at (checks the file system for files versus folders)."""
        return source_kind(self.url)


def verify_backoff(camera: CameraConfig) -> None:
    """The reconnection backoff range must not be empty."""
    if camera.reconnect_backoff_min_s > camera.reconnect_backoff_max_s:
        raise FieldRuleError(
            "reconnect_backoff_min_s",
            f"must not exceed reconnect_backoff_max_s ({camera.reconnect_backoff_max_s:g})",
            camera.reconnect_backoff_min_s,
        )


def verify_live_only_options(camera: CameraConfig) -> None:
    """``loop`` is for replays, ``max_fps`` for live streams; the wrong one is a mistake."""
    live = camera.kind.is_live
    if live and camera.loop:
        raise FieldRuleError(
            "loop", "applies only to video files and image folders", True
        )
    if not live and camera.max_fps is not None:
        raise FieldRuleError(
            "max_fps",
            "applies only to live sources (rtsp, http, webcam)",
            camera.max_fps,
        )
