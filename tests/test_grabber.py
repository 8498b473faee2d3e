"""FrameSource on real video files, image folders and a real RTSP server on loopback."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from anprd.config import CameraConfig
from anprd.grabber import (
    FrameSource,
    SourceError,
    SourceState,
    SourceStats,
    mask_url,
    open_source,
)
from anprd.types import Frame

# Generous: the machine is shared. Nothing here asserts on durations.
READ_TIMEOUT_S = 15.0
WAIT_DEADLINE_S = 45.0


@pytest.fixture
def unused_port() -> int:
    """A loopback TCP port nobody listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def decode_all(video: Path) -> list[np.ndarray]:
    """Reference frames: what OpenCV itself decodes from the file."""
    capture = cv2.VideoCapture(str(video))
    images = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        images.append(image)
    capture.release()
    return images


def read_until_done(source: FrameSource) -> list[Frame]:
    frames = []
    while not source.done:
        frame = source.read(timeout=READ_TIMEOUT_S)
        if frame is None:
            assert source.done, "no frame within the timeout and the source is not done"
            break
        frames.append(frame)
    return frames


def wait_for(
    source: FrameSource,
    condition: Callable[[SourceStats], bool],
    what: str,
    drain: bool = False,
) -> SourceStats:
    """Poll the source's stats until ``condition`` holds; optionally drain frames meanwhile."""
    deadline = time.monotonic() + WAIT_DEADLINE_S
    while time.monotonic() < deadline:
        stats = source.stats()
        if condition(stats):
            return stats
        if drain:
            source.read(timeout=0.05)
        else:
            time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}; last stats: {source.stats()}")


def live_camera(url: str, **overrides: object) -> CameraConfig:
    settings: dict[str, object] = {
        "id": "gate",
        "url": url,
        "open_timeout_s": 5.0,
        "read_timeout_s": 3.0,
        "reconnect_backoff_min_s": 0.2,
        "reconnect_backoff_max_s": 1.0,
    }
    settings.update(overrides)
    return CameraConfig.model_validate(settings)


# ---- replays ---------------------------------------------------------------------------------


def test_fast_replay_yields_every_frame_in_order_with_back_pressure(
    sample_video: Path,
) -> None:
    camera = CameraConfig(
        id="replay", url=str(sample_video), replay_pace="fast", queue_size=2
    )
    source = open_source(camera)
    try:
        # Nobody reads yet: the capture thread must block on the full queue, not drop.
        stats = wait_for(source, lambda s: s.queue_depth == 2, "a full queue")
        assert stats.frames_read <= camera.queue_size + 1
        frames = read_until_done(source)
    finally:
        assert source.stop()

    reference = decode_all(sample_video)
    fps = cv2.VideoCapture(str(sample_video)).get(cv2.CAP_PROP_FPS)
    assert len(reference) > 10
    assert [f.sequence for f in frames] == list(range(len(reference)))
    assert all(
        np.array_equal(f.image, r) for f, r in zip(frames, reference, strict=True)
    )
    assert {f.source_id for f in frames} == {"replay"}
    # Timestamps are start + media time: deterministic steps of 1/fps.
    steps = np.diff([f.timestamp for f in frames])
    np.testing.assert_allclose(steps, 1 / fps, atol=1e-5)
    final = source.stats()
    assert (final.frames_read, final.frames_dropped, final.queue_depth) == (
        len(reference),
        0,
        0,
    )
    assert final.state is SourceState.ENDED
    assert source.read(timeout=0.01) is None


def test_realtime_replay_ends_after_the_last_frame(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(5):
        cv2.imwrite(
            str(folder / f"{index:03d}.png"), np.full((8, 8, 3), index * 40, np.uint8)
        )
    camera = CameraConfig(id="rt", url=str(folder), folder_fps=50.0, queue_size=5)
    with open_source(camera) as source:
        # Realtime pace sleeps to 50 fps; the queue is large enough not to drop.
        assert not source.reconnecting_on_schedule()  # a file never waits for a camera
        frames = list(source)
        assert source.done and source.state is SourceState.ENDED
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 40, 80, 120, 160]
    np.testing.assert_allclose(np.diff([f.timestamp for f in frames]), 0.02, atol=1e-5)


def test_image_folder_replays_in_natural_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    # Plain sorting would put frame10 before frame2.
    names = ["frame1.png", "frame2.jpg", "frame10.png"]
    images = [np.full((24, 32, 3), value, np.uint8) for value in (10, 120, 250)]
    for name, image in zip(names, images, strict=True):
        cv2.imwrite(str(folder / name), image)
    (folder / "notes.txt").write_text("not an image")
    gray = np.arange(24 * 32, dtype=np.uint8).reshape(24, 32)
    # A grayscale file comes out as 3-channel BGR.
    cv2.imwrite(str(folder / "frame20.png"), gray)

    source = open_source(
        CameraConfig(id="folder", url=str(folder), replay_pace="fast", folder_fps=10.0)
    )
    frames = read_until_done(source)
    source.stop()

    assert [f.sequence for f in frames] == [0, 1, 2, 3]
    assert np.array_equal(frames[0].image, images[0])
    assert np.array_equal(frames[2].image, images[2])
    assert abs(int(frames[1].image.mean()) - 120) <= 2  # JPEG
    assert frames[3].image.shape == (24, 32, 3)
    assert np.array_equal(frames[3].image[..., 1], gray)
    np.testing.assert_allclose(
        frames[3].timestamp - frames[0].timestamp, 0.3, atol=1e-5
    )


def test_image_folder_reads_latin1_names_and_skips_broken_files(tmp_path: Path) -> None:
    folder = tmp_path / "sdcard"
    folder.mkdir()
    latin1 = folder / os.fsdecode(b"caf\xe9.png")  # not UTF-8: cv2.imread(str) crashed on it
    ok, png = cv2.imencode(".png", np.full((24, 32, 3), 77, np.uint8))
    latin1.write_bytes(png.tobytes())
    ok, jpeg = cv2.imencode(".jpg", np.full((24, 32, 3), 200, np.uint8))
    (folder / "half.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])  # still being written
    source = open_source(CameraConfig(id="sd", url=str(folder), replay_pace="fast"))
    frames = read_until_done(source)
    source.stop()
    assert [int(f.image[0, 0, 0]) for f in frames] == [77]


def test_loop_restarts_the_file_and_keeps_counting(sample_video: Path) -> None:
    length = len(decode_all(sample_video))
    camera = CameraConfig(
        id="loop", url=str(sample_video), replay_pace="fast", loop=True
    )
    source = open_source(camera)
    try:
        frames = [source.read(timeout=READ_TIMEOUT_S) for _ in range(length + 3)]
    finally:
        assert source.stop()
    assert all(f is not None for f in frames)
    assert [f.sequence for f in frames] == list(range(length + 3))
    assert np.array_equal(frames[length].image, frames[0].image)
    assert source.state is SourceState.ENDED


def test_corrupt_video_file_is_a_source_error_naming_the_path(tmp_path: Path) -> None:
    corrupt = tmp_path / "camera dump.mp4"
    corrupt.write_bytes(
        np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes()
    )
    with pytest.raises(SourceError) as error:
        open_source(CameraConfig(id="bad", url=str(corrupt)))
    assert str(corrupt) in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_video_file_is_a_source_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.avi"
    with pytest.raises(SourceError, match="not found") as error:
        open_source(CameraConfig(id="bad", url=str(missing)))
    assert str(missing) in str(error.value)


def test_empty_folder_is_a_source_error_naming_the_path(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError, match="no image files") as error:
        open_source(CameraConfig(id="bad", url=str(empty)))
    assert str(empty) in str(error.value)


# ---- live RTSP -------------------------------------------------------------------------------


def test_live_rtsp_stream_yields_frames(rtsp_server: str) -> None:
    source = open_source(live_camera(rtsp_server, queue_size=4))
    try:
        frames = [source.read(timeout=READ_TIMEOUT_S) for _ in range(5)]
        assert source.state is SourceState.STREAMING
    finally:
        assert source.stop()
    assert all(f is not None for f in frames), "stream delivered fewer than 5 frames"
    assert all(
        f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 for f in frames
    )
    assert all(f.source_id == "gate" for f in frames)
    sequences = [f.sequence for f in frames]
    assert sequences == sorted(set(sequences))
    assert source.state is SourceState.ENDED
    # Frames queued before the stop can still be read; then the source is done.
    while source.read(timeout=READ_TIMEOUT_S) is not None:
        pass
    assert source.done


def test_stream_options_do_not_outlive_the_open(
    rtsp_server: str, sample_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FFmpeg's stream options (probesize 32, no analysis) left in the process environment made a
    # later VideoCapture of a file drop a frame; the open sets them and puts the old value back.
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "before")
    source = open_source(live_camera(rtsp_server, queue_size=4))
    try:
        assert source.read(timeout=READ_TIMEOUT_S) is not None
    finally:
        assert source.stop()
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "before"
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    source = open_source(live_camera(rtsp_server, queue_size=4))
    try:
        assert source.read(timeout=READ_TIMEOUT_S) is not None
    finally:
        assert source.stop()
    assert "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ
    capture = cv2.VideoCapture(str(sample_video))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert frames == 30  # conftest's sample video


def test_live_source_keeps_the_newest_frames_and_counts_drops(rtsp_server: str) -> None:
    source = open_source(live_camera(rtsp_server, queue_size=2))
    try:
        # A consumer that does not read: the queue stays at 2 and older frames are dropped.
        stats = wait_for(source, lambda s: s.frames_read >= 8, "8 frames read")
        assert stats.queue_depth == 2
        assert stats.frames_dropped == stats.frames_read - stats.queue_depth
        frame = source.read(timeout=READ_TIMEOUT_S)
        assert frame is not None
        # The oldest frame still queued, not an older one.
        assert frame.sequence >= stats.frames_read - stats.queue_depth
    finally:
        assert source.stop()


def test_max_fps_passes_frames_on_at_most_that_often_while_reading_every_frame(rtsp_server: str) -> None:
    source = open_source(live_camera(rtsp_server, queue_size=50, max_fps=5))  # the stream: 25 fps
    try:
        frames = []
        while len(frames) < 6:
            frame = source.read(timeout=READ_TIMEOUT_S)
            assert frame is not None, f"only {len(frames)} frames passed on"
            frames.append(frame)
        stats = source.stats()
    finally:
        assert source.stop()
    # Frames are stamped when read: those passed on lie at least 1 / max_fps apart.
    gaps = np.diff([frame.timestamp for frame in frames])
    assert gaps.min() >= 1 / 5, gaps
    # The frames between were read (sequence numbers count them) and skipped, not dropped.
    sequences = [frame.sequence for frame in frames]
    assert sequences == sorted(set(sequences)) and sequences[-1] - sequences[0] > len(frames), sequences
    assert stats.frames_read > sequences[-1] and stats.frames_dropped == 0, stats


def test_source_reconnects_after_the_server_dies_and_resumes_when_it_returns(
    rtsp_server_factory: Callable[..., Any],
) -> None:
    server = rtsp_server_factory()
    source = open_source(live_camera(server.url, queue_size=1))
    try:
        first = source.read(timeout=READ_TIMEOUT_S)
        assert first is not None
        server.kill()
        lost = wait_for(
            source, lambda s: s.reconnects >= 2, "reconnection attempts", drain=True
        )
        assert lost.state in (SourceState.RECONNECTING, SourceState.CONNECTING)
        # down and handled, which the watchdog tells from a stall, until an attempt overruns
        assert source.reconnecting_on_schedule()
        camera = source.camera
        overdue = time.monotonic() + camera.open_timeout_s + camera.reconnect_backoff_max_s + 2
        assert not source.reconnecting_on_schedule(now=overdue)
        server.start()  # same port
        before = source.stats().frames_read
        wait_for(
            source,
            lambda s: s.frames_read > before and s.state is SourceState.STREAMING,
            "frames after the restart",
            drain=True,
        )
        frame = source.read(timeout=READ_TIMEOUT_S)
        assert frame is not None and frame.sequence >= before
        assert not source.reconnecting_on_schedule()  # streaming again
    finally:
        assert source.stop()


def test_hung_server_times_out_and_the_source_recovers(
    rtsp_server_factory: Callable[..., Any],
) -> None:
    server = rtsp_server_factory(codec="mjpeg")
    camera = live_camera(
        server.url, open_timeout_s=2.0, read_timeout_s=1.0, queue_size=1
    )
    source = open_source(camera)
    try:
        assert source.read(timeout=READ_TIMEOUT_S) is not None
        server.pause()  # connection stays open, nothing arrives: reads must time out
        wait_for(
            source,
            lambda s: s.reconnects >= 1,
            "a reconnection after the hang",
            drain=True,
        )
        server.resume()
        before = source.stats().frames_read
        wait_for(
            source,
            lambda s: s.frames_read > before,
            "frames after resuming",
            drain=True,
        )
    finally:
        assert source.stop()


def test_stop_event_ends_a_source_that_is_reconnecting(unused_port: int) -> None:
    stop_event = threading.Event()
    url = f"rtsp://127.0.0.1:{unused_port}/stream"
    source = open_source(live_camera(url), stop_event)
    wait_for(source, lambda s: s.reconnects >= 1, "a reconnection attempt")
    stop_event.set()
    # The end wakes the reader; the timeout is only a safety net.
    assert source.read(timeout=READ_TIMEOUT_S) is None
    assert source.done
    assert source.stop()
    assert source.state is SourceState.ENDED


# ---- credentials -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "rtsp://admin:hunter2@10.0.0.5:554/Streaming/1",
            "rtsp://admin:***@10.0.0.5:554/Streaming/1",
        ),
        ("rtsps://u:p%40ss@cam.example/live", "rtsps://u:***@cam.example/live"),
        (
            "http://cam/mjpg?user=admin&password=hunter2",
            "http://cam/mjpg?user=admin&password=***",
        ),
        ("rtsp://viewer@cam/stream", "rtsp://viewer@cam/stream"),
        ("rtsp://cam/stream", "rtsp://cam/stream"),
        ("/videos/gate.mp4", "/videos/gate.mp4"),
    ],
)
def test_mask_url_hides_passwords(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_logs_never_show_the_password(
    unused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="anprd.grabber")
    url = f"rtsp://admin:hunter2@127.0.0.1:{unused_port}/stream"
    source = open_source(live_camera(url))
    try:
        wait_for(source, lambda s: s.reconnects >= 1, "a failed connection")
    finally:
        source.stop()
    assert "admin:***@127.0.0.1" in caplog.text
    assert "hunter2" not in caplog.text


# ---- reconnection speed and hung streams ----------------------------------------------------


def test_a_restarted_server_is_retried_at_the_fast_interval_not_the_backoff(
    rtsp_server_factory: Callable[..., Any],
) -> None:
    server = rtsp_server_factory()
    # A back-off longer than the wait deadline: only the fast retries can reconnect in time.
    camera = live_camera(server.url, queue_size=1, reconnect_interval_s=0.2, reconnect_fast_for_s=600,
                         reconnect_backoff_min_s=100, reconnect_backoff_max_s=100)
    source = open_source(camera)
    try:
        assert source.read(timeout=READ_TIMEOUT_S) is not None
        server.kill()
        wait_for(source, lambda s: s.reconnects >= 3, "failed attempts while the server is down",
                 drain=True)
        server.start()
        before = source.stats().frames_read
        wait_for(source, lambda s: s.frames_read > before and s.state is SourceState.STREAMING,
                 "frames after the restart", drain=True)
    finally:
        assert source.stop()


def test_a_hung_stream_is_lost_after_one_read_timeout_without_stale_frames(
    rtsp_server_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="anprd.grabber")
    server = rtsp_server_factory()  # H.264: FFmpeg keeps frames buffered when the stream hangs
    camera = live_camera(server.url, queue_size=50, read_timeout_s=2.0)
    source = open_source(camera)
    try:
        assert source.read(timeout=READ_TIMEOUT_S) is not None
        server.pause()
        paused_at = time.time()
        wait_for(source, lambda s: s.state is not SourceState.STREAMING, "the loss of the hung stream")
        frames = []
        while (frame := source.read(timeout=0)) is not None:
            frames.append(frame)
        # Frames in flight when the server stopped arrive at once; a read that waited out the
        # timeout hands back a stale frame, stamped a whole timeout later, which must not pass.
        cutoff = paused_at + camera.read_timeout_s / 2
        late = [f.timestamp - paused_at for f in frames if f.timestamp > cutoff]
        assert late == [], late
        assert "no frame from" in caplog.text
    finally:
        server.resume()
        assert source.stop()


NATIVE_STDERR_PROBE = """
import sys, threading, time
from anprd.config import CameraConfig
from anprd.grabber import open_source
from anprd.logs import NativeStderr, setup_logging
setup_logging("INFO", "json")
native = NativeStderr().start()
camera = CameraConfig.model_validate({"id": "gate", "url": sys.argv[1], "reconnect_interval_s": 0.1})
source = open_source(camera)
deadline = time.monotonic() + 60
while source.stats().reconnects < 5 and time.monotonic() < deadline:
    time.sleep(0.05)
source.stop()
native.stop()
print("after stop", file=sys.stderr)
"""


def test_ffmpeg_messages_reach_the_log_as_records_once_a_minute(unused_port: int) -> None:
    import json
    import subprocess
    import sys

    url = f"rtsp://admin:hunter2@127.0.0.1:{unused_port}/stream"
    result = subprocess.run([sys.executable, "-c", NATIVE_STDERR_PROBE, url], capture_output=True,
                            text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[-1] == "after stop"  # fd 2 is the real stderr again
    records = [json.loads(line) for line in lines[:-1]]  # every other line is a JSON record
    ffmpeg = [r for r in records if r["logger"] == "anprd.ffmpeg"]
    # six attempts, each refused with the same FFmpeg line: one record
    assert len(ffmpeg) == 1 and "Connection refused" in ffmpeg[0]["msg"], records
    assert ffmpeg[0]["level"] == "WARNING"
    assert "hunter2" not in result.stderr
