#!/usr/bin/python3
"""Serve a JPEG sequence or a video file as an RTSP stream, for tests and demos.

Runs under Debian's system python (``/usr/bin/python3``) with GStreamer's RTSP server from
python3-gi (install with ``scripts/install_system_deps.sh``)::

    /usr/bin/python3 scripts/rtsp_server.py --frames-dir frames/ --port 8554 --codec h264

serves ``rtsp://127.0.0.1:8554/stream`` and prints ``READY <url>`` on stdout once it accepts
connections. ``--port 0`` picks a free port (the READY line names it). SIGTERM/SIGINT stop it.
A ``--video`` is first decoded to JPEGs in a temporary folder, so that both inputs use the same
(paced, loopable) pipeline.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402 (after require_version)

__all__ = ["main", "media_pipeline"]

MOUNT_POINT = "/stream"
ENCODERS = {
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
    "! rtph264pay name=pay0 pt=96 config-interval=1",
    "mjpeg": "jpegenc ! rtpjpegpay name=pay0 pt=26",
}


def media_pipeline(frames_dir: Path, fps: int, codec: str, loop: bool) -> str:
    """gst-launch description of the served media: decoded JPEGs (decoding paces them), I420,
    then the encoder and RTP payloader."""
    location = str(frames_dir / "%05d.jpg").replace('"', '\\"')
    return (
        f'( multifilesrc location="{location}" index=0 loop={str(loop).lower()} '
        f"caps=image/jpeg,framerate={fps}/1 ! jpegparse ! jpegdec ! videoconvert "
        f"! video/x-raw,format=I420 ! {ENCODERS[codec].format(fps=fps)} )"
    )


def extract_frames(video: Path, frames_dir: Path) -> int:
    """Decode ``video`` into ``frames_dir/%05d.jpg`` with GStreamer; returns the frame count."""
    location = str(frames_dir / "%05d.jpg")
    pipeline = Gst.parse_launch(
        "filesrc name=src ! decodebin ! videoconvert ! jpegenc quality=95 "
        "! multifilesink name=sink"
    )
    pipeline.get_by_name("src").set_property("location", str(video))
    pipeline.get_by_name("sink").set_property("location", location)
    pipeline.set_state(Gst.State.PLAYING)
    message = pipeline.get_bus().timed_pop_filtered(
        Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    pipeline.set_state(Gst.State.NULL)
    if message.type == Gst.MessageType.ERROR:
        error, _debug = message.parse_error()
        raise SystemExit(f"rtsp_server: cannot decode {video}: {error.message}")
    count = len(list(frames_dir.glob("*.jpg")))
    if count == 0:
        raise SystemExit(f"rtsp_server: no frames decoded from {video}")
    return count


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--frames-dir", type=Path, help="folder of 00000.jpg, 00001.jpg, ..."
    )
    source.add_argument(
        "--video", type=Path, help="video file (decoded to JPEGs first)"
    )
    parser.add_argument(
        "--port", type=int, default=8554, help="TCP port; 0 picks a free one"
    )
    parser.add_argument("--fps", type=int, default=25, help="frame rate served")
    parser.add_argument("--codec", choices=sorted(ENCODERS), default="h264")
    parser.add_argument(
        "--loop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="restart at the end",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Gst.init(None)

    temp_dir = None
    if args.video is not None:
        if not args.video.is_file():
            print(f"rtsp_server: video not found: {args.video}", file=sys.stderr)
            return 2
        temp_dir = Path(tempfile.mkdtemp(prefix="rtsp_server_"))
        frames_dir = temp_dir
        extract_frames(args.video, frames_dir)
    else:
        frames_dir = args.frames_dir
        if not (frames_dir / "00000.jpg").is_file():
            print(f"rtsp_server: {frames_dir}/00000.jpg not found", file=sys.stderr)
            return 2

    try:
        server = GstRtspServer.RTSPServer()
        server.set_address("127.0.0.1")
        server.set_service(str(args.port))
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(media_pipeline(frames_dir, args.fps, args.codec, args.loop))
        factory.set_shared(True)  # one encoder for every client
        server.get_mount_points().add_factory(MOUNT_POINT, factory)
        if server.attach(None) == 0:
            print(
                f"rtsp_server: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr
            )
            return 1

        loop = GLib.MainLoop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
        print(
            f"READY rtsp://127.0.0.1:{server.get_bound_port()}{MOUNT_POINT}", flush=True
        )
        loop.run()
        return 0
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
