"""Logging for a long-running service: one line per record on stderr, secrets and plates masked.

Under systemd, stderr goes to journald, which stores one entry per line and adds its own
timestamp. So every record is kept on one line (newlines in messages and tracebacks are
escaped), the timestamp is dropped when stderr is the journal (``JOURNAL_STREAM``), and a
``<N>`` syslog priority prefix lets ``journalctl -p warning`` filter by level.

Two formats: ``text`` (``INFO anprd.grabber: camera connected camera=gate1``) and ``json``
(one object per line: ``ts``, ``level``, ``logger``, ``msg``, extra fields, ``exc``).
Fields passed with ``extra={...}`` are appended as ``key=value`` pairs or JSON members.

Credentials in URLs (``rtsp://user:secret@host``) and secret-looking query values are masked
in every message, field and traceback. Plate numbers are personal data: log them through
:func:`redact_plate`, which hides them unless ``logging.log_plates`` is set.

C libraries (TensorFlow at load, libjpeg and libpng while decoding) write to the process's stderr
directly, past logging: :func:`stderr_set_aside` keeps them off the terminal for a block, and
:class:`NativeStderr` turns each line they write into a log record (the daemon runs under it, so
FFmpeg's reason a camera failed to open reaches the log in its format).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Literal, TextIO

__all__ = [
    "JsonFormatter",
    "NativeStderr",
    "SecretMaskFilter",
    "TextFormatter",
    "mask_secrets",
    "redact_plate",
    "setup_logging",
    "stderr_set_aside",
    "stream_is_journal",
]

LogFormat = Literal["text", "json"]

# scheme://user:password@host -> scheme://user:***@host. The password runs to the last "@"
# before the host's "/" (passwords with a raw "@" or "'" happen), never across whitespace or a
# double quote (the end of a JSON string).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@\"]*):[^\s/\"]*@")
# ?password=...&auth_token=...&key=... style secrets in URLs and key=value text: any key that is,
# or ends in, one of these words.
_SECRET_VALUE = re.compile(
    r"(?P<key>\b(?:\w*[_-])?(?:password|passwd|pwd|pass|secret|token|api_?key|apikey|key|auth|sig|signature)=)"
    r"[^\s&;,\"']+",
    re.IGNORECASE,
)
_MASK = "***"

# syslog priorities that journald reads from a "<N>" line prefix.
_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

# Attributes every LogRecord has; anything else on a record came from extra={...}.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

# Per-process key for plate hashes: the same plate gets the same tag within one run (so log
# lines can be correlated) but the tag cannot be reversed by hashing every possible plate.
_PLATE_KEY = secrets.token_bytes(16)


def mask_secrets(text: str) -> str:
    """Mask URL passwords and secret query/key=value values in free text."""
    if "=" not in text and "@" not in text:
        return text  # fast path: most log lines hold neither
    text = _URL_PASSWORD.sub(rf"\g<head>:{_MASK}@", text)
    return _SECRET_VALUE.sub(rf"\g<key>{_MASK}", text)


def redact_plate(text: str, log_plates: bool) -> str:
    """Plate text for a log message: as is when ``log_plates``, else a salted hash tag.

    >>> redact_plate("AB123CD", log_plates=True)
    'AB123CD'
    >>> redact_plate("AB123CD", log_plates=False)  # doctest: +SKIP
    'plate#1f3a9c0e'
    """
    if log_plates or not text:
        return text
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=4, key=_PLATE_KEY).hexdigest()
    return f"plate#{digest}"


def stream_is_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is connected to journald.

    systemd sets ``JOURNAL_STREAM=<dev>:<inode>`` for the service's stdout/stderr; comparing it
    with the stream's own device and inode avoids trusting a value inherited by a child whose
    stderr was redirected elsewhere.
    """
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        device, inode = (int(part) for part in value.split(":", 1))
        stat = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return stat.st_dev == device and stat.st_ino == inode


class SecretMaskFilter(logging.Filter):
    """Masks credentials in a record's message and string extras before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message or record.args:
            # Freeze the formatted text so args cannot bring the secret back.
            record.msg, record.args = masked, None
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, mask_secrets(value))
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _RECORD_ATTRS}


def _one_line(text: str) -> str:
    # journald splits on newlines; keep the record together and still readable.
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    parts = []
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(parts)


def _logfmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(ch in text for ch in ' ="\\'):
        return json.dumps(text)
    return text


class _LineFormatter(logging.Formatter):
    def __init__(self, journal: bool) -> None:
        super().__init__()
        self._journal = journal

    def _prefix(self, record: logging.LogRecord) -> str:
        if not self._journal:
            return ""
        level = max(
            (lvl for lvl in _SYSLOG_PRIORITY if lvl <= record.levelno),
            default=logging.DEBUG,
        )
        return f"<{_SYSLOG_PRIORITY[level]}>"

    @staticmethod
    def _timestamp(record: logging.LogRecord) -> str:
        return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")


class TextFormatter(_LineFormatter):
    """``[<N>][timestamp ]LEVEL logger: message key=value ... | traceback`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [] if self._journal else [self._timestamp(record)]
        parts += [record.levelname, f"{record.name}:", record.getMessage()]
        parts += [f"{key}={_logfmt_value(value)}" for key, value in _extras(record).items()]
        line = " ".join(parts)
        exception = _exception_text(self, record)
        if exception:
            line += " | " + exception
        # Masked again as a whole: covers tracebacks and non-string extras too.
        return self._prefix(record) + mask_secrets(_one_line(line))


class JsonFormatter(_LineFormatter):
    """One JSON object per line: ts, level, logger, msg, extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": self._timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            payload.setdefault(key, value)
        exception = _exception_text(self, record)
        if exception:
            payload["exc"] = exception
        # json.dumps escapes newlines, so the object stays on one line; masked as in text.
        line = json.dumps(payload, default=str, ensure_ascii=False)
        return self._prefix(record) + mask_secrets(line)


def setup_logging(
    level: str = "INFO",
    fmt: LogFormat = "text",
    *,
    stream: TextIO | None = None,
    journal: bool | None = None,
) -> logging.Handler:
    """Send all logging to one stderr handler; safe to call again (e.g. on SIGHUP reload).

    Parameters
    ----------
    level
        Root level name (DEBUG, INFO, WARNING, ERROR, CRITICAL; case-insensitive).
    fmt
        ``"text"`` or ``"json"``.
    stream
        Where lines go; default ``sys.stderr``.
    journal
        Whether ``stream`` is journald (no timestamp, ``<N>`` prefix); default: detected from
        ``JOURNAL_STREAM``.

    Returns
    -------
    logging.Handler
        The installed handler (replacing one installed by an earlier call).
    """
    level_name = level.strip().upper()
    levels = logging.getLevelNamesMapping()
    if level_name not in levels:
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}; use 'text' or 'json'")
    stream = sys.stderr if stream is None else stream
    if journal is None:
        journal = stream_is_journal(stream)

    handler = logging.StreamHandler(stream)
    handler.set_name("anprd")
    handler.setFormatter(TextFormatter(journal) if fmt == "text" else JsonFormatter(journal))
    handler.addFilter(SecretMaskFilter())

    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "anprd":
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(levels[level_name])
    # warnings.warn() output would otherwise bypass the handler as multi-line stderr text.
    logging.captureWarnings(True)
    return handler


@contextlib.contextmanager
def stderr_set_aside() -> Iterator[bytearray]:
    """Point the process's stderr (file descriptor 2, where C libraries write) at a temporary file
    for the block; yields a bytearray that holds what was written once the block ends, raising or
    not. Other threads' stderr goes there too meanwhile, so use it where none writes."""
    said = bytearray()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            said.extend(captured.read())


# What C libraries write on fd 2, by source. Measured with opencv-contrib-python-headless 5.0.0.93:
# FFmpeg's own messages ("[tcp @ 0x5616...] Connection to tcp://...: Connection refused") come from
# FFmpeg's default av_log callback, OpenCV's ("[ WARN:0@1.440] global cap.cpp:212 open ...") from
# its logger; both write to fd 2. OPENCV_FFMPEG_LOGLEVEL would route FFmpeg's through OpenCV's
# callback to stdout (printf), and cv2.utils.logging offers no Python callback.
_FFMPEG_LINE = re.compile(r"^\[(?P<component>[\w-]+) @ 0x[0-9a-fA-F]+\]\s*")
_OPENCV_LINE = re.compile(r"^\[\s*(?P<level>DEBUG|INFO|WARN|ERROR|FATAL)[^\]]*\]\s*(?:global\s+)?")
_OPENCV_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
                  "ERROR": logging.ERROR, "FATAL": logging.CRITICAL}
_REPEAT_WINDOW_S = 60.0  # one record per kind of line per minute: a camera retrying twice a second


class NativeStderr:
    """Route what C libraries write to the process's stderr (file descriptor 2) into logging.

    :meth:`start` points fd 2 at a pipe read by a thread, which logs each line as a record of
    ``anprd.ffmpeg`` (FFmpeg, ``[component @ 0x...]`` lines), ``anprd.opencv`` (OpenCV's own
    ``[ WARN:...]`` lines, at their level) or ``anprd.stderr`` (anything else), with secrets
    masked like every record. Python's ``sys.stderr`` and the log handler move to a duplicate of
    the old fd 2, so records and tracebacks still reach the real stderr. The same line (digits
    aside) is logged once a minute at most, with how often it came meanwhile in ``repeats``.
    :meth:`stop` puts fd 2 back.
    """

    def __init__(self) -> None:
        self._saved_fd: int | None = None
        self._previous: TextIO | None = None
        self._thread: threading.Thread | None = None
        self._last_logged: dict[str, tuple[float, int]] = {}

    def start(self) -> NativeStderr:
        """Begin routing; returns self. Call once, from the main thread, before other threads
        write to stderr."""
        if self._saved_fd is not None:
            raise RuntimeError("NativeStderr already started")
        sys.stderr.flush()
        self._saved_fd = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._previous = sys.stderr
        sys.stderr = open(  # noqa: SIM115 - lives until stop()
            self._saved_fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
        )
        self._point_handlers(sys.stderr)
        self._thread = threading.Thread(target=self._pump, args=(read_fd,), name="native-stderr",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Put fd 2 back (which ends the reader: the pipe's last writer is gone); idempotent."""
        if self._saved_fd is None:
            return
        os.dup2(self._saved_fd, 2)
        if self._thread is not None:
            self._thread.join(timeout)  # a child process holding the pipe open would keep it
        assert self._previous is not None
        sys.stderr.flush()
        sys.stderr = self._previous
        self._point_handlers(sys.stderr)
        os.close(self._saved_fd)
        self._saved_fd = None

    @staticmethod
    def _point_handlers(stream: TextIO) -> None:
        for handler in logging.getLogger().handlers:
            if handler.get_name() == "anprd" and isinstance(handler, logging.StreamHandler):
                handler.setStream(stream)

    def _pump(self, read_fd: int) -> None:
        with open(read_fd, "rb") as pipe:
            for raw in pipe:
                line = raw.decode("utf-8", errors="backslashreplace").strip()
                if line:
                    self._log(line)

    def _log(self, line: str) -> None:
        if match := _FFMPEG_LINE.match(line):
            name, level = "anprd.ffmpeg", logging.WARNING  # OpenCV lets FFmpeg print errors only
            text = f"{match.group('component')}: {line[match.end():]}"
        elif match := _OPENCV_LINE.match(line):
            name, level, text = "anprd.opencv", _OPENCV_LEVELS[match.group("level")], line[match.end():]
        else:
            name, level, text = "anprd.stderr", logging.WARNING, line
        key = name + re.sub(r"\d+", "#", text)
        now = time.monotonic()
        logged_at, repeats = self._last_logged.get(key, (-float("inf"), 0))
        if now - logged_at < _REPEAT_WINDOW_S:
            self._last_logged[key] = (logged_at, repeats + 1)
            return
        if len(self._last_logged) > 1000:  # bounded: lines that differ in more than digits
            self._last_logged.clear()
        self._last_logged[key] = (now, 0)
        extra = {"repeats": repeats} if repeats else None
        logging.getLogger(name).log(level, "%s", text, extra=extra)
