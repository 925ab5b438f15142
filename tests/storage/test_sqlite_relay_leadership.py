"""The relay's leadership on SQLite (`serve --workers N`): exactly one
process relays, the holder of an flock on "<database>.relay.lock"; a waiter
takes over when the leader releases it or dies (SIGKILL included)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from paygrid_server.storage.sqlite import relay_leadership
from paygrid_server.storage.sqlite.relay_leadership import SqliteRelayLeadership

_REAL_SLEEP = asyncio.sleep


@pytest.fixture
def refusals(monkeypatch) -> list[float]:
    """Each time a waiter found the lock taken (it then waits to try again)."""
    seen: list[float] = []

    async def counted(delay: float) -> None:
        seen.append(delay)
        await _REAL_SLEEP(0.001)

    monkeypatch.setattr(relay_leadership.asyncio, "sleep", counted)
    return seen


async def _until(condition, timeout_s: float = 30) -> None:
    async def poll() -> None:
        while not condition():
            await _REAL_SLEEP(0.001)
    await asyncio.wait_for(poll(), timeout_s)


async def test_a_second_leader_waits_until_the_first_releases(tmp_path: Path,
                                                              refusals: list[float]) -> None:
    database = tmp_path / "paygrid.sqlite3"
    first, second = SqliteRelayLeadership(database), SqliteRelayLeadership(database)
    await first.acquire()
    waiting = asyncio.ensure_future(second.acquire())
    try:
        await _until(lambda: len(refusals) >= 2)  # tried, found it held, tried again
        assert not waiting.done()
        await first.release()
        await asyncio.wait_for(waiting, 30)
    finally:
        waiting.cancel()
        await second.release()


async def test_a_killed_leader_s_lock_is_taken_over(tmp_path: Path,
                                                    refusals: list[float]) -> None:
    database = tmp_path / "paygrid.sqlite3"
    leader = subprocess.Popen(
        [sys.executable, "-c",
         "import asyncio, sys, time\n"
         "from pathlib import Path\n"
         "from paygrid_server.storage.sqlite.relay_leadership import SqliteRelayLeadership\n"
         f"asyncio.run(SqliteRelayLeadership(Path({str(database)!r})).acquire())\n"
         "print('leads', flush=True)\n"
         "time.sleep(600)\n"], stdout=subprocess.PIPE, text=True)
    follower = SqliteRelayLeadership(database)
    waiting = None
    try:
        assert leader.stdout.readline().strip() == "leads"
        waiting = asyncio.ensure_future(follower.acquire())
        await _until(lambda: len(refusals) >= 2)
        assert not waiting.done()
        os.kill(leader.pid, signal.SIGKILL)
        leader.wait(timeout=30)
        await asyncio.wait_for(waiting, 30)
    finally:
        if waiting is not None:
            waiting.cancel()
        leader.kill()
        await follower.release()
