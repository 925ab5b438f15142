"""structlog as JSON lines: one event per thing that happened.

Lines go to stderr through a 64 KiB buffer that a background thread flushes
every LOG_FLUSH_INTERVAL_MS (and at exit). Writing each line with its own
write() system call, as print(flush=True) does, cost the event loop about
10 us a line, two lines a payment (scripts/bench); the price is that a
SIGKILL loses at most the last interval's lines. What a payment did is in
the database either way; logs explain it.
"""

from __future__ import annotations

import atexit
import contextvars
import io
import logging
import os
import sys
import threading
import time
from json.encoder import c_make_encoder, encode_basestring_ascii
from typing import BinaryIO

import structlog

LOG_FLUSH_INTERVAL_MS = 100
LOG_BUFFER_BYTES = 64 * 1024


class BufferedLines:
    """A binary stream written without flushing, flushed on a timer."""

    def __init__(self, raw: BinaryIO) -> None:
        self._out = io.BufferedWriter(raw, LOG_BUFFER_BYTES)  # thread-safe writes
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically,
                                         name="paygrid-log-flush", daemon=True)
        self._flusher.start()
        atexit.register(self.flush)

    def write(self, line: bytes) -> None:
        self._out.write(line)

    def flush(self) -> None:
        try:
            self._out.flush()
        except (OSError, ValueError):
            pass  # stderr closed or gone: nothing left to tell

    def _flush_periodically(self) -> None:
        while not self._stop.wait(LOG_FLUSH_INTERVAL_MS / 1_000):
            self.flush()


_stderr_lines: BufferedLines | None = None


class _LineLogger:
    """structlog's logger: one rendered event (bytes) per line."""

    def __init__(self, out: BufferedLines) -> None:
        self._out = out

    def msg(self, message: bytes) -> None:
        self._out.write(message + b"\n")

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def configure_logging(level: str = "INFO", worker_of: str | None = None) -> None:
    """`worker_of`: in a worker of `serve --workers N`, its supervisor's pid;
    each line then names the worker's pid, as the workers share one stderr."""
    global _stderr_lines
    if _stderr_lines is None:
        # Shares the file descriptor with sys.stderr; text written there
        # (tracebacks, warnings) is flushed by Python as before.
        _stderr_lines = BufferedLines(io.FileIO(sys.stderr.fileno(), "wb", closefd=False))
    out = _stderr_lines
    render = line_renderer(os.getpid() if worker_of else None)
    structlog.configure(
        processors=[render],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *_: _LineLogger(out),
        cache_logger_on_first_use=True,
    )


# structlog's names for a method's level (its add_log_level).
_LEVEL_NAMES = {"warn": "warning", "exception": "error"}
_CONTEXT_PREFIX = "structlog_"  # structlog.contextvars' key prefix
_JSON_ENCODERS = threading.local()


def _json_fallback(value):
    """What structlog's JSONRenderer writes for a value JSON has no type
    for: its __structlog__(), else its repr."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


def _json_encoder():
    """json.dumps' own C encoder with JSONRenderer's arguments (ASCII,
    ", " and ": ", circular references checked, its fallback for other
    types), made once per thread: json.dumps makes a new one on
    every call, which was half of a short line's JSON."""
    encoder = getattr(_JSON_ENCODERS, "encoder", None)
    if encoder is None:
        encoder = _JSON_ENCODERS.encoder = c_make_encoder(
            {}, _json_fallback, encode_basestring_ascii, None, ": ", ", ",
            False, False, True)
    return encoder


class _UtcStamp:
    """TimeStamper(fmt="iso", utc=True)'s text, its date and time formatted
    once a second: 2026-12-05T21:59:41.123456Z (no fraction at .000000,
    as datetime.isoformat)."""

    __slots__ = ("second",)

    def __init__(self) -> None:
        # (second, its text) in one attribute: threads share the stamp.
        self.second = (-1, "")

    def now(self) -> str:
        second, ns = divmod(time.time_ns(), 1_000_000_000)
        cached, text = self.second
        if second != cached:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self.second = (second, text)
        us = ns // 1_000
        return f"{text}.{us:06d}Z" if us else f"{text}Z"


def line_renderer(worker_pid: int | None):
    """One processor for structlog's chain merge_contextvars, add_log_level,
    the worker's pid (in a worker), TimeStamper(fmt="iso", utc=True),
    format_exc_info and JSONRenderer: the same keys in the same order, the
    same JSON, at about two thirds of the cost. Every Pay writes a line,
    and it cost the event loop more than its own 12-13 us alone suggest
    (docs/performance.md, "What each of Pay's features costs")."""
    stamp = _UtcStamp()

    def render(logger, method: str, event: dict) -> bytes:
        context = contextvars.copy_context()
        for var in context:
            name = var.name
            if name.startswith(_CONTEXT_PREFIX):
                value = context[var]
                if value is not Ellipsis:
                    event.setdefault(name[len(_CONTEXT_PREFIX):], value)
        event["level"] = _LEVEL_NAMES.get(method, method)
        if worker_pid is not None:
            event["worker_pid"] = worker_pid
        event["timestamp"] = stamp.now()
        if "exc_info" in event:
            event = structlog.processors.format_exc_info(logger, method, event)
        try:
            return "".join(_json_encoder()(event, 0)).encode()
        except BaseException:
            # A failure can leave the encoder's circular-reference marks
            # behind: a new encoder for the next line.
            _JSON_ENCODERS.encoder = None
            raise

    return render
