"""InFlight.answer: the caller's view of an execution, which its going
away does not stop (what asyncio.shield(InFlight.run(...)) gave)."""

from __future__ import annotations

import asyncio
import gc

import pytest
from structlog.testing import capture_logs

from paygrid_server.domain.in_flight import InFlight


async def test_the_answer_is_the_executions_result_or_error() -> None:
    in_flight = InFlight()

    async def pays() -> str:
        return "paid"

    async def fails() -> str:
        raise LookupError("no such channel")

    assert await in_flight.answer("p1", pays()) == "paid"
    with pytest.raises(LookupError):
        await in_flight.answer("p2", fails())
    assert len(in_flight) == 0


async def test_a_caller_going_away_leaves_the_execution_running(
        caplog: pytest.LogCaptureFixture) -> None:
    in_flight = InFlight()
    release = asyncio.Event()
    finished = []

    async def execution() -> None:
        await release.wait()
        finished.append(True)
        raise LookupError("seen by no caller")

    caller = asyncio.ensure_future(in_flight.answer("p1", execution()))
    await asyncio.sleep(0)  # the execution starts and waits
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert "p1" in in_flight  # still running: a retry is told it is in progress
    with capture_logs() as logged:
        release.set()
        await in_flight.drain(timeout_s=10)
        await asyncio.sleep(0)  # the done callback runs
    assert finished == [True] and "p1" not in in_flight
    # Nobody awaits the answer any more: the failure is logged, once.
    failed = [line for line in logged if line["event"] == "execution.failed_unanswered"]
    assert [(line["execution_id"], line["log_level"]) for line in failed] == [("p1", "error")]
    assert isinstance(failed[0]["exc_info"], LookupError)
    gc.collect()  # an unretrieved task exception would be logged now
    assert "exception was never retrieved" not in caplog.text
