"""The server's log lines are what structlog's own processor chain
(merge_contextvars, add_log_level, TimeStamper(fmt="iso", utc=True),
format_exc_info, JSONRenderer) would write, byte for byte: one processor
does it all (logging_setup.line_renderer) because a Pay writes a line and
structlog's chain cost the event loop half again as much."""

from __future__ import annotations

import contextvars
import json
import datetime
import time

import pytest
import structlog

from paygrid_server import logging_setup


class _Custom:
    def __repr__(self) -> str:
        return "<custom>"


class _Structlogged:
    def __structlog__(self) -> str:
        return "as structlog shows it"


def _chain(worker_pid: int | None, at: datetime.datetime):
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)

    def fixed_stamp(logger, method, event):
        event["timestamp"] = at.isoformat().replace("+00:00", "Z")
        return event

    def add_pid(logger, method, event):
        event["worker_pid"] = worker_pid
        return event

    assert stamp  # the processor the chain had; its clock is fixed here
    return [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
            *([add_pid] if worker_pid is not None else []), fixed_stamp,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=lambda e, **kw: __import__(
                "json").dumps(e, **kw).encode())]


def _run(processors, method: str, event: dict):
    for processor in processors:
        event = processor(None, method, event)
    return event


def _error() -> BaseException:
    try:
        raise ValueError("boom")
    except ValueError as error:
        return error


EVENTS = [
    ("info", {"event": "payment.completed", "status": "SUCCEEDED", "legs": [
        {"index": 0, "payee": "****5544", "failure": None, "latency_ms": 0.125}],
        "processing_ms": 1.5, "failure": None}),
    ("warning", {"event": "x", "text": "naïve ☃ \"quoted\"\n", "nan": float("nan"),
                 "big": 10 ** 30, "flag": True, "nested": {"a": (1, 2)}}),
    ("warn", {"event": "y", "custom": _Custom(), "own": _Structlogged()}),
    ("error", {"event": "z", "exc_info": _error()}),
    ("exception", {"event": "w", "request_id": "given, not the bound one"}),
    ("debug", {"event": "v"}),
]


@pytest.mark.parametrize("worker_pid", [None, 4242])
@pytest.mark.parametrize("method,event", EVENTS)
@pytest.mark.parametrize("microsecond", [0, 7, 999_999])
def test_a_line_is_structlogs_chains_byte_for_byte(monkeypatch, worker_pid, method, event,
                                                   microsecond) -> None:
    at = datetime.datetime(2026, 12, 5, 21, 59, 41, microsecond, tzinfo=datetime.timezone.utc)
    at_ns = int(at.replace(microsecond=0).timestamp()) * 1_000_000_000 + microsecond * 1_000 + 999
    monkeypatch.setattr(logging_setup.time, "time_ns", lambda: at_ns)

    def in_a_call() -> tuple:
        structlog.contextvars.bind_contextvars(request_id="r-1", payment_id="pay_1")
        structlog.contextvars.bind_contextvars(unbound="gone")
        structlog.contextvars.unbind_contextvars("unbound")
        ours = _run([logging_setup.line_renderer(worker_pid)], method, dict(event))
        theirs = _run(_chain(worker_pid, at), method, dict(event))
        return ours, theirs

    ours, theirs = contextvars.copy_context().run(in_a_call)
    assert isinstance(ours, bytes)
    assert ours == theirs


def test_the_timestamp_is_structlogs_at_second_boundaries(monkeypatch) -> None:
    render = logging_setup.line_renderer(None)
    for at_s in (1_764_971_981, 1_764_971_982, 1_764_971_981):
        monkeypatch.setattr(logging_setup.time, "time_ns", lambda: at_s * 1_000_000_000 + 5_000)
        line = render(None, "info", {"event": "e"})
        expected = datetime.datetime.fromtimestamp(at_s + 5e-6, datetime.timezone.utc)
        assert b'"timestamp": "' + expected.isoformat().replace("+00:00", "Z").encode() in line


def test_a_line_that_cannot_be_encoded_leaves_the_next_one_unharmed() -> None:
    render = logging_setup.line_renderer(None)
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        render(None, "info", {"event": "e", "loop": loop, "shared": [1]})
    assert b'"shared": [1]' in render(None, "info", {"event": "e", "shared": [1]})
    # the same list again: not mistaken for a circular one
    shared = [2]
    assert render(None, "info", {"event": "e", "a": shared, "b": shared}).count(b"[2]") == 2
    time.sleep(0)


def test_the_servers_loggers_write_the_rendered_line(monkeypatch, capfd) -> None:
    """configure_logging's loggers, at its level, through its buffer."""
    at_ns = 1_764_971_981 * 1_000_000_000 + 123_456_789
    monkeypatch.setattr(logging_setup.time, "time_ns", lambda: at_ns)
    logging_setup.configure_logging("INFO")
    try:
        log = structlog.get_logger("paygrid.test").bind(bound="b")

        def in_a_call() -> None:
            structlog.contextvars.bind_contextvars(request_id="r-2")
            log.debug("not.written")
            log.info("written %s", "here", n=1)
            log.warning("warned")
            try:
                raise KeyError("k")
            except KeyError:
                log.exception("failed")

        contextvars.copy_context().run(in_a_call)
        logging_setup._stderr_lines.flush()
        lines = capfd.readouterr().err.splitlines()
    finally:
        structlog.reset_defaults()
    mine = [json.loads(line) for line in lines if '"r-2"' in line]
    assert [(e["event"], e["level"]) for e in mine] == [
        ("written here", "info"), ("warned", "warning"), ("failed", "error")]
    assert mine[0] == {"bound": "b", "n": 1, "event": "written here", "request_id": "r-2",
                       "level": "info", "timestamp": "2025-12-05T21:59:41.123456Z"}
    assert "KeyError" in mine[2]["exception"]
