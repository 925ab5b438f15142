"""A write round after a shared one gathers (storage/sqlite/loop_rounds.py):
it waits GATHER_TURNS turns of the event loop, or GATHER_MAX_S by the loop's
clock if that comes first, and the units added meanwhile share its COMMIT; a
round after a lone unit, or one already full, starts at the next turn.

The loop's clock is held still here (LoopClock), so that only the test moves
it: turns are counted, never timed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from paygrid_server.storage.sqlite.loop_rounds import GATHER_MAX_S, GATHER_TURNS
from paygrid_server.storage.sqlite.writer import MAX_UNITS_PER_COMMIT, SqliteWriter
from tests.storage.test_sqlite_writer import insert, stored_notes, writer  # noqa: F401 (a fixture)
from tests.support.loop_turns import turns as loop_turns


class LoopClock:
    """The running event loop's clock, moved only by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        loop = asyncio.get_running_loop()
        self.now = loop.time()
        monkeypatch.setattr(loop, "time", lambda: self.now)


@pytest.fixture
async def clock(writer: SqliteWriter, monkeypatch: pytest.MonkeyPatch) -> LoopClock:  # noqa: F811
    return LoopClock(monkeypatch)


async def a_shared_round(writer: SqliteWriter, prefix: str) -> None:
    commits = writer.commits
    await asyncio.gather(writer.unit(insert(f"{prefix}-1")), writer.unit(insert(f"{prefix}-2")))
    assert writer.commits - commits == 1  # one round of two units


async def added_after(writer: SqliteWriter, turns: int, note: str,
                      clock_at_turn_1: tuple[LoopClock, float] | None = None) -> None:
    """Adds its unit `turns` turns of the loop after the call's own turn
    (having set the loop's clock at the first, if given)."""
    for turn in range(1, turns + 1):
        await asyncio.sleep(0)  # one turn of the loop
        if turn == 1 and clock_at_turn_1 is not None:
            clock, now = clock_at_turn_1
            clock.now = now
    await writer.unit(insert(note))


async def commits_for(writer: SqliteWriter, first: list[str], late: str, turns: int,
                      clock_at_turn_1: tuple[LoopClock, float] | None = None) -> int:
    """COMMITs made for the `first` units, added at once, and `late`, added
    `turns` turns after them."""
    commits = writer.commits
    await asyncio.gather(*(writer.unit(insert(note)) for note in first),
                         added_after(writer, turns, late, clock_at_turn_1))
    return writer.commits - commits


async def test_after_a_shared_round_a_unit_added_within_the_gathering_shares_the_commit(
        writer: SqliteWriter, clock: LoopClock, tmp_path: Path) -> None:  # noqa: F811
    await a_shared_round(writer, "a")
    assert await commits_for(writer, ["first"], "at the last turn", GATHER_TURNS) == 1
    await a_shared_round(writer, "b")
    assert await commits_for(writer, ["second"], "one turn late", GATHER_TURNS + 1) == 2
    assert {"first", "at the last turn", "second", "one turn late"} <= stored_notes(
        tmp_path / "w.sqlite3")


async def test_the_gathering_ends_at_its_time_bound_whatever_the_turns_left(
        writer: SqliteWriter, clock: LoopClock) -> None:  # noqa: F811
    await a_shared_round(writer, "a")
    started = clock.now  # the first unit's round is scheduled at this time
    just_before = (clock, started + GATHER_MAX_S - 1e-6)
    assert await commits_for(writer, ["first"], "just before", 2, just_before) == 1
    await a_shared_round(writer, "b")
    started = clock.now
    at_the_bound = (clock, started + GATHER_MAX_S)
    assert await commits_for(writer, ["second"], "at the bound", 2, at_the_bound) == 2


async def test_after_a_lone_unit_the_next_round_starts_at_the_next_turn(
        writer: SqliteWriter, clock: LoopClock) -> None:  # noqa: F811
    await writer.unit(insert("alone"))
    assert await commits_for(writer, ["first"], "the same turn", 0) == 1
    await writer.unit(insert("alone again"))
    assert await commits_for(writer, ["second"], "the next turn", 1) == 2


async def units_run_by_turn(writer: SqliteWriter, notes: list[str], turns: int) -> int:
    """How many of the units, added at once, ran their statements by the
    given turn of the loop after their own."""
    ran: list[str] = []

    def recording(note: str):
        def work(db):
            ran.append(note)
            return insert(note)(db)
        return work
    units = [asyncio.ensure_future(writer.unit(recording(note))) for note in notes]
    await loop_turns(turns)
    seen = len(ran)
    await asyncio.gather(*units)
    assert len(ran) == len(notes)
    return seen


async def test_a_round_full_of_units_does_not_wait_for_more(
        writer: SqliteWriter, clock: LoopClock) -> None:  # noqa: F811
    await a_shared_round(writer, "a")
    one_short = [f"short-{i}" for i in range(MAX_UNITS_PER_COMMIT - 1)]
    assert await units_run_by_turn(writer, one_short, 2) == 0  # gathering
    await a_shared_round(writer, "b")
    full = [f"full-{i}" for i in range(MAX_UNITS_PER_COMMIT)]
    assert await units_run_by_turn(writer, full, 2) == MAX_UNITS_PER_COMMIT
