"""A server's write rounds: the statements on the event loop, the COMMIT on
the writer's thread.

Why: Python's sqlite3 lets the GIL go around every statement, and a statement
run on the writer's thread then waits to win it back from the busy event
loop. Measured at half of Pay's peak (900 Pays/s, docs/performance.md,
session 16): the thread's rounds took 2.4x their CPU in wall time and kept
it busy 95% of the time, so a Pay's two writes queued behind each other's
rounds (Pay p99 19-24 ms). Run on the loop, a round's statements take only
their CPU (nothing else wants the GIL then) and one hand-over is left: the
COMMIT, which writes the WAL and waits for the disk on the thread while the
loop goes on.

Workers sharing the file (`serve --workers N`) take the file's write turn
(write_turn.py) before a round and give it back after its COMMIT. The loop
takes it only when it is free; when another worker has it, the thread waits
for it, and the loop then runs its round with every unit queued meanwhile
(one COMMIT for them all). With the statements on the loop the turn is held
for their CPU and the COMMIT, not for a GIL hand-over per statement, which
held two workers' turns at 1.8-2.2x their CPU (session 14).

The thread and the loop never use the connection (or the turn) at once: the
loop starts a round only while no job of its own is on the thread, and hands
every round that it does not run here to the thread (units that manage
their own transaction, a BEGIN that finds the file locked, a round in which a
unit fails, a lone unit that finds the file locked after all). What a unit's
caller sees is what SqliteWriter promises either way: it resumes once its
work is durable, and a failing unit fails alone.

Each round is one state (RoundState): idle, the thread waiting for the turn,
or a job on the thread (the round's COMMIT, or whole units).

A round that follows a shared one (more than one unit) first gathers: it
waits GATHER_TURNS turns of the event loop before it starts. The callers the
last round answered are then on their way to their next write (a Pay's
outcome follows its insert after a channel call a few turns long), and new
calls to their first; waiting for them makes one COMMIT of what would be
several. A COMMIT's work (the WAL frames of every B-tree page the round
dirtied, the fsync, the hand-over to the thread and the loop's wake-up)
hardly grows with its units, so it is paid fewer times a Pay. A round after
a lone unit starts at the next turn: at low load nothing else is coming, and
gathering would only add latency. GATHER_MAX_S bounds what it adds to a
write's latency. Measured side by side (docs/performance.md, session 21):
server CPU a Pay 0.92x / 0.94x at 32 / 128 in flight (0.88x / 0.90x without
the time bound, which cost a batch streamed beside it 6% of its items/s).
"""

from __future__ import annotations

import asyncio
import enum
import sqlite3
from typing import TYPE_CHECKING, Any, Callable

import structlog

from paygrid_server.storage.sqlite.sqlite_faults import as_storage_error
from paygrid_server.storage.sqlite.write_units import Outcome, Unit, settle

if TYPE_CHECKING:
    from paygrid_server.storage.sqlite.writer import SqliteWriter

log = structlog.get_logger("paygrid.storage")

# BEGIN on the loop never waits for another connection's lock: a round that
# finds the file locked goes to the thread, which waits busy_timeout for it.
LOOP_BUSY_TIMEOUT_MS = 0

# Turns of the event loop a round waits for more units after a shared round
# (the module's docstring says why). Each is one pass of the loop: a few µs
# when it is idle, the ready callbacks' time when it is busy. Of 3, 8 and 16
# (without the time bound: 0.96x, 0.92-0.94x, 0.88x CPU a Pay), 16.
GATHER_TURNS = 16
# And at most this long by the loop's clock: what gathering may add to a
# write's latency. Reached when the loop's turns are long: a batch's messages
# are parsed in them (16 turns took 5.4 ms at p50 under a batch, 0.8 ms
# under two servers' Pays at 32 in flight).
GATHER_MAX_S = 0.001


def _waited_for_a_lock(error: BaseException) -> bool:
    """SQLITE_BUSY: what the thread's busy_timeout would have waited out."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.Error) and code is not None and (
        code & 0xFF) == sqlite3.SQLITE_BUSY


class RoundState(enum.Enum):
    IDLE = "idle"  # nothing of ours on the thread: the loop may start a round
    WAITING_FOR_TURN = "waiting for the turn"  # the thread waits for another worker's turn
    ON_THREAD = "on the thread"  # the thread has the round's COMMIT, or its units


class LoopRounds:
    def __init__(self, writer: "SqliteWriter", loop: asyncio.AbstractEventLoop,
                 max_units: int) -> None:
        self._writer = writer
        self._loop = loop
        self._max_units = max_units
        # Not bounded here because its producers are: every unit comes from a
        # unary call (at most max_concurrent_calls), a batch stream's bounded
        # pipeline (max_concurrent_batch_streams of them) or the resolver,
        # and each waits for its unit before making another.
        self._pending: list[Unit] = []
        self._state = RoundState.IDLE
        self._scheduled = False
        self._gather_turns_left = 0  # while scheduled: turns of the loop still to wait
        self._gather_until = 0.0  # while scheduled: the loop's time when it stops waiting
        self._previous_round_shared = False  # carried more than one unit: gather
        self._drained: asyncio.Future | None = None

    def add(self, unit: Unit) -> None:
        if unit.loop is not self._loop:
            # One loop starts every use of the connection; another loop's
            # unit could start one while the thread has ours.
            raise RuntimeError("the SQLite writer serves the event loop that opened it")
        self._pending.append(unit)
        self._schedule()

    async def drain(self) -> None:
        """Returns once every unit added so far has been answered."""
        if self._state is RoundState.IDLE and not self._pending:
            return
        if self._drained is None:
            self._drained = self._loop.create_future()
        await asyncio.shield(self._drained)

    def _schedule(self) -> None:
        # After the callbacks ready now: the tasks they resume may add units
        # that then share this round's COMMIT.
        if not self._scheduled and self._state is RoundState.IDLE:
            self._scheduled = True
            self._gather_turns_left = GATHER_TURNS if self._previous_round_shared else 0
            self._gather_until = self._loop.time() + GATHER_MAX_S
            self._loop.call_soon(self._next_round)

    def _next_round(self) -> None:
        if (self._gather_turns_left > 0 and len(self._pending) < self._max_units
                and self._loop.time() < self._gather_until):
            self._gather_turns_left -= 1
            self._loop.call_soon(self._next_round)  # one more turn for units to join
            return
        self._scheduled = False
        if self._state is not RoundState.IDLE or not self._pending:
            return
        if not self._writer.turn_without_waiting():
            self._state = RoundState.WAITING_FOR_TURN
            self._writer.hand_to_thread([], self._writer.wait_for_turn, self._turn_is_ours)
            return
        self._start_round()

    def _turn_is_ours(self, outcomes: list[Outcome]) -> None:
        """On the loop, the thread having waited for the turn (or failed to
        take it: the file's own lock still guards it, and the round goes on)."""
        self._state = RoundState.IDLE
        self._start_round()

    def _start_round(self) -> None:
        units = self._pending[:self._max_units]
        del self._pending[:self._max_units]
        self._previous_round_shared = len(units) > 1
        # What any other callback sees until _answer (a round answered here,
        # on the loop, is IDLE again before this returns).
        self._state = RoundState.ON_THREAD
        try:
            on_thread = self._round(units)
        except BaseException as error:  # noqa: BLE001 - no unit may wait for ever
            log.exception("storage.loop_round_failed")
            self._writer.rollback()
            self._answer([(u, None, error) for u in units])
            return
        if on_thread is not None:
            self._writer.hand_to_thread(units, on_thread, self._answer)

    def _round(self, units: list[Unit]) -> Callable[[], None] | None:
        """Runs what of the round the loop may; returns what the thread is to
        do then, which answers the units (None: answered here)."""
        writer = self._writer
        if not all(unit.in_transaction for unit in units) or not writer.begin_without_waiting():
            return lambda: writer.run_units(units)
        db = writer.db
        results: list[Any] = []
        try:
            for unit in units:
                results.append(unit.work(db))
        except BaseException as error:  # noqa: BLE001 - as on the thread: answered, not raised
            writer.rollback()
            if len(units) == 1 and not _waited_for_a_lock(error):  # never run twice
                self._answer([(units[0], None, as_storage_error(error, writer.path))])
                return None
            return lambda: writer.run_each_alone(units)
        return lambda: writer.commit_loop_round(units, results)

    def _answer(self, outcomes: list[Outcome]) -> None:
        """On the loop, once the round's job is over (its units answered)."""
        self._state = RoundState.IDLE
        self._writer.give_turn()  # a round answered on the loop took it there
        settle([(unit.future, result, error) for unit, result, error in outcomes])
        if self._pending:
            self._schedule()
        elif self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
