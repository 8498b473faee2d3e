"""One-line logs for journald: formats, syslog priority prefixes, secret and plate masking."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from anprd.config.service import LoggingConfig
from anprd.logs import mask_secrets, redact_plate, setup_logging, stream_is_journal

log = logging.getLogger("anprd.test")


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def lines_of(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_text_format_one_line_with_fields() -> None:
    stream = io.StringIO()
    setup_logging("info", "text", stream=stream, journal=False)
    log.debug("hidden")
    log.info("camera %s connected\nafter retry", "gate1", extra={"camera": "gate1", "fps": 14.9})
    try:
        raise RuntimeError("decoder broke\nbadly")
    except RuntimeError:
        log.exception("frame failed")

    lines = lines_of(stream)
    assert len(lines) == 2, lines
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d INFO anprd\.test: "
        r"camera gate1 connected\\nafter retry camera=gate1 fps=14\.9",
        lines[0],
    ), lines[0]
    assert " ERROR anprd.test: frame failed | Traceback (most recent call last):" in lines[1]
    assert "RuntimeError: decoder broke\\nbadly" in lines[1]


def test_journal_mode_has_priority_prefix_and_no_timestamp() -> None:
    stream = io.StringIO()
    setup_logging("DEBUG", "text", stream=stream, journal=True)
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    assert lines_of(stream) == [
        "<7>DEBUG anprd.test: d",
        "<6>INFO anprd.test: i",
        "<4>WARNING anprd.test: w",
        "<3>ERROR anprd.test: e",
        "<2>CRITICAL anprd.test: c",
    ]


def test_json_format() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", stream=stream, journal=True)
    try:
        raise ValueError("bad url rtsp://admin:hunter2@10.0.0.5/s")
    except ValueError:
        log.warning("source failed: %s", "rtsp://admin:hunter2@10.0.0.5/s", extra={"camera": "gate1"})
        log.error("with traceback", exc_info=True)
    first, second = lines_of(stream)
    assert first.startswith("<4>{")
    record = json.loads(first[3:])
    assert record["level"] == "WARNING"
    assert record["logger"] == "anprd.test"
    assert record["msg"] == "source failed: rtsp://admin:***@10.0.0.5/s"
    assert record["camera"] == "gate1"
    assert "ts" in record
    exc = json.loads(second[3:])["exc"]
    assert "ValueError: bad url rtsp://admin:***@10.0.0.5/s" in exc
    assert "hunter2" not in stream.getvalue()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/stream1", "rtsp://admin:***@10.0.0.5:554/stream1"),
        ("open rtsp://u:p@ss@cam/x failed", "open rtsp://u:***@cam/x failed"),  # raw "@" in password
        ("tcp://:secret@broker:5556", "tcp://:***@broker:5556"),
        ("http://cam/api?user=a&password=x1&token=t0k", "http://cam/api?user=a&password=***&token=***"),
        ("rtsp://admin@cam/stream", "rtsp://admin@cam/stream"),  # no password: unchanged
        ("mail ops@example.com at http://host/path", "mail ops@example.com at http://host/path"),
        ("two: rtsp://a:b@c/ rtsp://d:e@f/", "two: rtsp://a:***@c/ rtsp://d:***@f/"),
        ("rtsp://admin:it's9@10.0.0.5/stream", "rtsp://admin:***@10.0.0.5/stream"),  # "'" in password
        ("opening 'rtsp://o'neil:pw@cam/s'", "opening 'rtsp://o'neil:***@cam/s'"),
        ('{"url": "rtsp://a:b@c/s", "x": "u:v@w"}', '{"url": "rtsp://a:***@c/s", "x": "u:v@w"}'),
        ("https://cam/live?auth_token=abc&key=k3y&sig=s1&size=2",
         "https://cam/live?auth_token=***&key=***&sig=***&size=2"),
        ("camera gate1 keyframe=12 monkey=3", "camera gate1 keyframe=12 monkey=3"),  # words ending in key
    ],
)
def test_mask_secrets(text: str, expected: str) -> None:
    assert mask_secrets(text) == expected


def test_secrets_masked_in_args_and_extras() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "text", stream=stream, journal=True)
    log.info("connecting %s", "rtsp://admin:hunter2@cam/s", extra={"url": "rtsp://admin:hunter2@cam/s"})
    assert lines_of(stream) == [
        "<6>INFO anprd.test: connecting rtsp://admin:***@cam/s url=rtsp://admin:***@cam/s"
    ]


def test_secrets_masked_in_structured_extras() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", stream=stream, journal=False)
    log.info("sources", extra={"sources": {"gate1": "rtsp://admin:hunter2@cam/s"}})
    record = json.loads(stream.getvalue())
    assert record["sources"] == {"gate1": "rtsp://admin:***@cam/s"}


def test_redact_plate() -> None:
    assert redact_plate("AB123CD", log_plates=True) == "AB123CD"
    # Letters outside 0-9a-f, so no run of the plate can turn up in the hex tag by chance
    # (the key is random per process).
    hidden = redact_plate("KX77WZT", log_plates=False)
    assert not any(c in hidden.removeprefix("plate#") for c in "KXWZTkxwzt"), hidden
    assert re.fullmatch(r"plate#[0-9a-f]{8}", hidden)
    assert redact_plate("KX77WZT", log_plates=False) == hidden  # same plate, same tag: correlatable
    assert redact_plate("KX77WZU", log_plates=False) != hidden
    assert redact_plate("", log_plates=False) == ""


def test_setup_is_idempotent_and_validates() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("INFO", stream=first, journal=True)
    setup_logging("WARNING", stream=second, journal=True)  # e.g. after a SIGHUP reload
    assert [h.get_name() for h in logging.getLogger().handlers].count("anprd") == 1
    log.info("dropped")
    log.warning("kept")
    assert first.getvalue() == ""
    assert lines_of(second) == ["<4>WARNING anprd.test: kept"]
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        setup_logging("LOUD")
    with pytest.raises(ValueError, match="unknown log format"):
        setup_logging("INFO", "xml")  # type: ignore[arg-type]


def test_python_warnings_become_log_lines() -> None:
    stream = io.StringIO()
    setup_logging("INFO", stream=stream, journal=True)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old API", UserWarning, stacklevel=1)
    (line,) = lines_of(stream)
    assert line.startswith("<4>WARNING py.warnings: ") and "UserWarning: old API" in line


def test_journal_detection(tmp_path: Path) -> None:
    target = tmp_path / "stderr.log"
    with target.open("w") as stream:
        stat = os.fstat(stream.fileno())
        assert stream_is_journal(stream, {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})
        assert not stream_is_journal(stream, {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino + 1}"})
        assert not stream_is_journal(stream, {})
        assert not stream_is_journal(stream, {"JOURNAL_STREAM": "garbage"})
    assert not stream_is_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


def test_logging_config() -> None:
    config = LoggingConfig()
    assert (config.level, config.format, config.log_plates) == ("INFO", "text", False)
    assert LoggingConfig(level="debug").level == "DEBUG"
    with pytest.raises(ValidationError):
        LoggingConfig(level="LOUD")
    with pytest.raises(ValidationError):
        LoggingConfig(format="xml")
