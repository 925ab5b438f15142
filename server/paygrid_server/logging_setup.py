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
import io
import json
import logging
import os
import sys
import threading
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
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            *([_worker_pid(os.getpid())] if worker_of else []),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_json_bytes),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *_: _LineLogger(out),
        cache_logger_on_first_use=True,
    )
    # aiormq logs every failed connect and dropped connection at ERROR, with
    # a traceback, to stderr: the event relay reports those itself, one line
    # per distinct problem, not one per retry.
    for chatty in ("aiormq", "aio_pika"):
        logging.getLogger(chatty).setLevel(logging.CRITICAL)


def _worker_pid(pid: int):
    def add(logger, method: str, event: dict) -> dict:
        event["worker_pid"] = pid
        return event
    return add


def _json_bytes(event: dict, **kwargs) -> bytes:
    return json.dumps(event, **kwargs).encode()
