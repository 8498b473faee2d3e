"""Shared fixtures: a small real video file and a real RTSP server on loopback.

``sample_video``: path of a 30-frame 320x240 MJPG .avi at 25 fps (every frame different).
``rtsp_server``: ``rtsp://127.0.0.1:PORT/stream`` serving ``sample_video`` (H.264, looping).
``rtsp_server_factory``: ``make(codec="h264", fps=25) -> RtspTestServer`` for tests that need
several servers, another codec, or to kill, pause and restart one.

The RTSP server is ``scripts/rtsp_server.py`` run under Debian's ``/usr/bin/python3`` (GStreamer
via python3-gi); without it these fixtures fail and say to run ``scripts/install_system_deps.sh``.
"""

from __future__ import annotations

import functools
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SERVER_SCRIPT = REPO_ROOT / "scripts" / "rtsp_server.py"
RTSP_SERVER_START_TIMEOUT_S = 30.0

SAMPLE_VIDEO_FRAMES = 30
SAMPLE_VIDEO_FPS = 25.0
SAMPLE_VIDEO_SIZE = (320, 240)  # width, height

_GST_CHECK = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
needed = ["multifilesrc", "jpegparse", "jpegdec", "videoconvert", "x264enc", "rtph264pay",
          "jpegenc", "rtpjpegpay", "decodebin", "multifilesink"]
missing = [name for name in needed if Gst.ElementFactory.find(name) is None]
if missing:
    raise SystemExit("missing GStreamer elements: " + ", ".join(missing))
"""


@functools.cache
def _rtsp_server_problem() -> str | None:
    """Why the RTSP test server cannot run here, or None if it can."""
    if not Path(SYSTEM_PYTHON).is_file():
        return f"{SYSTEM_PYTHON} not found"
    result = subprocess.run(
        [SYSTEM_PYTHON, "-c", _GST_CHECK],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit status {result.returncode}"
    return None


def _sample_image(index: int, width: int, height: int) -> np.ndarray:
    """A frame that differs from its neighbours: gradient, moving box, frame number."""
    ramp = np.linspace(0, 255, width, dtype=np.float32)
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = ramp
    image[..., 1] = (index * 8) % 256
    image[..., 2] = ramp[::-1]
    x = (index * 9) % (width - 60)
    cv2.rectangle(image, (x, 20), (x + 60, 80), (255, 255, 255), -1)
    cv2.putText(
        image, str(index), (20, height - 30), cv2.FONT_HERSHEY_SIMPLEX, 2, (0, 0, 0), 4
    )
    return image


@pytest.fixture
def sample_video(tmp_path: Path) -> Path:
    """A 30-frame, 25 fps, 320x240 MJPG .avi written with cv2.VideoWriter."""
    path = tmp_path / "sample.avi"
    width, height = SAMPLE_VIDEO_SIZE
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"MJPG"), SAMPLE_VIDEO_FPS, (width, height)
    )
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi"
    try:
        for index in range(SAMPLE_VIDEO_FRAMES):
            writer.write(_sample_image(index, width, height))
    finally:
        writer.release()
    return path


def extract_jpeg_frames(video: Path, frames_dir: Path) -> int:
    """Write every frame of ``video`` as ``frames_dir/%05d.jpg``; returns the frame count."""
    frames_dir.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(video))
    count = 0
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            cv2.imwrite(str(frames_dir / f"{count:05d}.jpg"), image)
            count += 1
    finally:
        capture.release()
    assert count > 0, f"no frames decoded from {video}"
    return count


class RtspTestServer:
    """``scripts/rtsp_server.py`` as a subprocess; keeps its port across restarts."""

    def __init__(
        self, frames_dir: Path, log_path: Path, codec: str = "h264", fps: int = 25
    ):
        self.frames_dir = frames_dir
        self.log_path = log_path
        self.codec = codec
        self.fps = fps
        self.port = 0  # 0 until the first start picks a free port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        assert self.port, "server never started"
        return f"rtsp://127.0.0.1:{self.port}/stream"

    def start(self) -> None:
        """Start serving (on the previous port after a restart); waits for READY."""
        assert self.process is None, "already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    SYSTEM_PYTHON,
                    str(RTSP_SERVER_SCRIPT),
                    "--frames-dir",
                    str(self.frames_dir),
                    "--port",
                    str(self.port),
                    "--codec",
                    self.codec,
                    "--fps",
                    str(self.fps),
                    "--loop",
                ],
                stdout=subprocess.PIPE,
                stderr=log,
            )
        ready = self._wait_for_ready()
        self.port = int(ready.rsplit(":", 1)[1].split("/", 1)[0])

    def _wait_for_ready(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + RTSP_SERVER_START_TIMEOUT_S
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.kill()
                    pytest.fail(
                        f"RTSP server not READY within {RTSP_SERVER_START_TIMEOUT_S} s"
                    )
                if selector.select(remaining):
                    chunk = os.read(self.process.stdout.fileno(), 4096)
                    if not chunk:  # exited before READY
                        self.kill()
                        log = self.log_path.read_text(errors="replace").strip()
                        pytest.fail(f"RTSP server exited before READY: {log[-2000:]}")
                    buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode()
        assert line.startswith("READY "), f"unexpected RTSP server output: {line!r}"
        return line

    def kill(self) -> None:
        """SIGKILL, as a crashing camera would; no-op if not running."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing arrives (a hung camera)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def rtsp_server_factory(
    sample_video: Path, tmp_path: Path
) -> Iterator[Callable[..., RtspTestServer]]:
    """``make(codec="h264", fps=25)`` starts a server streaming ``sample_video`` in a loop."""
    problem = _rtsp_server_problem()
    if problem is not None:
        pytest.fail(
            f"the RTSP test server cannot run ({problem}); "
            "install its system packages with: bash scripts/install_system_deps.sh"
        )
    frames_dir = tmp_path / "rtsp_frames"
    extract_jpeg_frames(sample_video, frames_dir)
    servers: list[RtspTestServer] = []

    def make(codec: str = "h264", fps: int = 25) -> RtspTestServer:
        log_path = tmp_path / f"rtsp_server_{len(servers)}.log"
        server = RtspTestServer(frames_dir, log_path, codec=codec, fps=fps)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.kill()  # SIGKILL ends a paused (SIGSTOP) server too


@pytest.fixture
def rtsp_server(rtsp_server_factory: Callable[..., RtspTestServer]) -> str:
    """URL of a live H.264 RTSP stream of ``sample_video`` on loopback."""
    return rtsp_server_factory().url


def without_root_file_access(locked: Path) -> list[str]:
    """A command prefix that runs without root's right to read and search any file, as an
    unprivileged service runs; [] when not root. `locked` is a file or folder its owner may not
    read: the test is skipped only where that right cannot be dropped (root reads `locked` even so)."""
    if os.geteuid() != 0:
        return []
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    works = subprocess.run([*drop, "true"], capture_output=True, text=True)
    if works.returncode != 0:
        pytest.skip(f"root here cannot drop the right to read every file: {works.stderr.strip()[:200]}")
    probe = ["ls", str(locked)] if locked.is_dir() else ["cat", str(locked)]
    if subprocess.run([*drop, *probe], capture_output=True).returncode == 0:
        pytest.skip(f"root here reads {locked} without that right (user namespaces)")
    return drop


def one_line_model_error(make: Callable[[], object]) -> str:
    """The message of the `ModelError` that `make()` raises, checked to be one line."""
    from cascade.models import ModelError

    with pytest.raises(ModelError) as error:
        make()
    message = str(error.value)
    assert "\n" not in message
    return message


def render_clip(folder: Path) -> tuple[Path, Path]:
    """Render the tests' clip into `folder`: 4 s of 640x360 with passing cars (train.clip exits 1
    when no plate fits) on scikit-image's photos, and its truth CSV; (video, truth)."""
    import skimage

    video, truth = folder / "clip.mp4", folder / "clip.truth.csv"
    photos = Path(skimage.__file__).parent / "data"  # the same backgrounds with or without ../shared
    result = subprocess.run(
        [sys.executable, "-m", "train.clip", "--seed", "5", "--seconds", "4", "--size", "640x360",
         "--out", str(video), "--truth", str(truth), "--backgrounds", str(photos)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return video, truth


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`render_clip`'s clip and truth CSV, shared by the replay and daemon tests, rendered once."""
    return render_clip(tmp_path_factory.mktemp("clip"))
