"""Every write of the process, through one writing connection, with group
commit.

A unit of work is a plain function of a sqlite3 connection that only
touches the database (it may run twice: see _run_batch). All units queued
while a round was busy (at most MAX_UNITS_PER_COMMIT) run in one transaction
and are made durable with one COMMIT. Their callers resume only after that
COMMIT, so nothing is answered, and no channel is called, on the strength of
work that is not on disk.

Where a round runs (loop_rounds.py says why): its statements on the event
loop, its COMMIT (WAL frames, fsync) on this module's thread. Workers sharing
the file (`serve --workers N`) take the file's write turn first
(write_turn.py); a taken turn is waited for on the thread, never on the
loop. Units that manage their own transaction (migrations), and the units
of a round in which one failed, run on the thread.

Why not a statement at a time through aiosqlite: with synchronous=FULL each
COMMIT waits for the disk, and each statement awaited from the event loop
costs a loop turn while the write lock is held; both bounded paygrid at a
few hundred payments a second. Here a round costs one hand-over to the
thread and one wake-up of the loop.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

import structlog

from paygrid_server.domain.ports.storage_errors import StorageFault, StorageUnavailable
from paygrid_server.storage.sqlite.connection import BUSY_TIMEOUT_MS, connect
from paygrid_server.storage.sqlite.loop_rounds import LOOP_BUSY_TIMEOUT_MS, LoopRounds
from paygrid_server.storage.sqlite.sqlite_faults import as_storage_error
from paygrid_server.storage.sqlite.write_turn import WriteTurn
from paygrid_server.storage.sqlite.write_units import LoopJob, Outcome, Unit

T = TypeVar("T")
log = structlog.get_logger("paygrid.storage")

# Units one COMMIT may carry: bounds how long a unit waits behind the ones
# queued before it, and how many run again alone when one of them fails.
MAX_UNITS_PER_COMMIT = 256


_STOP = object()


def _closed_fault() -> StorageUnavailable:
    return StorageUnavailable(StorageFault.CLOSED, "the SQLite writer is closed")


class SqliteWriter:
    def __init__(self, path: Path, shared: bool = False) -> None:
        self._path = path
        self._shared = shared  # other processes (workers) write the file: take turns
        self._turn: WriteTurn | None = None
        self._turn_held = False
        # Jobs of the loop's rounds (loop_rounds.py), one at a time, then _STOP.
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="paygrid-sqlite-writer",
                                        daemon=True)
        self._ready = threading.Event()
        self._db: sqlite3.Connection | None = None
        self._open_error: BaseException | None = None
        self._closed = False
        self._rounds: LoopRounds | None = None  # set by open(), on the loop it runs on
        self._answers: list[Outcome] = []  # the running job's, handed to the loop at its end
        self._busy_timeout_ms = BUSY_TIMEOUT_MS
        self.commits = 0  # COMMITs made (fewer than units: that is group commit)
        self._thread.start()

    @classmethod
    async def open(cls, path: Path, shared: bool = False) -> "SqliteWriter":
        writer = cls(path, shared)
        await asyncio.to_thread(writer._ready.wait)
        if writer._open_error is not None:
            raise writer._open_error
        writer._rounds = LoopRounds(writer, asyncio.get_running_loop(), MAX_UNITS_PER_COMMIT)
        return writer

    async def unit(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `work` as one all-or-nothing unit; returns once it is durable."""
        return await self._submit(work, in_transaction=True)

    async def alone(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `work` outside any transaction (it manages its own)."""
        return await self._submit(work, in_transaction=False)

    async def _submit(self, work: Callable[[sqlite3.Connection], T], in_transaction: bool) -> T:
        if self._closed:
            # Work cut off by a shutdown (a group or payment past the grace)
            # must end, not wait for a thread that is gone: nothing of it is
            # stored, so it stays resumable as after a crash.
            raise _closed_fault()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._rounds.add(Unit(work, future, loop, in_transaction))
        return await future

    async def close(self) -> None:
        self._closed = True
        await self._rounds.drain()  # the units added before the close are answered
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    # -- the thread ---------------------------------------------------------

    def _serve(self) -> None:
        try:
            self._db = connect(self._path)
            self._turn = WriteTurn(self._path) if self._shared else None
        except BaseException as error:  # noqa: BLE001 - handed to open()
            if self._db is not None:
                self._db.close()
            self._open_error = error
            self._ready.set()
            return
        self._ready.set()
        try:
            while (job := self._queue.get()) is not _STOP:
                self._run_job(job)
        finally:
            self._db.close()
            if self._turn is not None:
                self._turn.close()

    def _run_job(self, job: LoopJob) -> None:
        try:
            job.run()
        except BaseException as error:  # noqa: BLE001 - the thread must outlive it
            # Every write of the process waits on this thread: if it died,
            # every later call would hang until its deadline.
            log.exception("storage.writer_round_failed")
            self.rollback()
            self._hand_back([(u, None, error) for u in job.units if not u.handed_back])
        if job.units:
            # The job's COMMIT (or ROLLBACK) is made: the other workers'
            # writers may go. A job without units only waited for the turn,
            # which the loop's round it was waited for now holds.
            self.give_turn()
        answers, self._answers = self._answers, []
        try:
            job.loop.call_soon_threadsafe(job.answer, answers)
        except RuntimeError:
            pass  # that event loop is closed: nobody is waiting any more

    def _begin(self) -> None:
        if self._db.in_transaction:
            self.rollback()  # left open by a ROLLBACK that itself failed
        self._db.execute("BEGIN IMMEDIATE")

    def rollback(self) -> None:
        """Never raises: on a full or failing disk ROLLBACK can fail too (SQLite
        then has usually rolled back already), and the thread must go on.
        Nothing to do when a failed `OR ROLLBACK` statement (the batch item
        UPDATEs: sqlite/batch_item_rows.py) has ended the transaction."""
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            log.warning("storage.rollback_failed", exc_info=True)

    def _run(self, units: list[Unit]) -> None:
        batch: list[Unit] = []
        for unit in units:
            if unit.in_transaction:
                batch.append(unit)
                continue
            self._run_batch(batch)
            batch = []
            self._run_alone(unit)
        self._run_batch(batch)

    def _run_batch(self, units: list[Unit]) -> None:
        """All units in one transaction. If any fails (or the commit does),
        everything is rolled back and each unit runs again in a transaction
        of its own, so only the failing unit fails. Failures are rare, and a
        SAVEPOINT around every unit would cost two statements per unit."""
        if len(units) <= 1:
            for unit in units:
                self._run_alone(unit)  # nobody to share with: never run twice
            return
        db = self._db
        results: list[Any] = []
        try:
            self._begin()
            for unit in units:
                results.append(unit.work(db))
            db.execute("COMMIT")
            self.commits += 1
        except BaseException:  # noqa: BLE001 - each unit is retried alone below
            self.rollback()
            for unit in units:
                self._run_alone(unit)
            return
        self._hand_back([(unit, result, None) for unit, result in zip(units, results)])

    def _run_alone(self, unit: Unit) -> None:
        db = self._db
        in_transaction = unit.in_transaction
        try:
            if in_transaction:
                self._begin()
            result = unit.work(db)
            if in_transaction:
                db.execute("COMMIT")
                self.commits += 1
            outcome = (unit, result, None)
        except BaseException as error:  # noqa: BLE001 - handed to its caller
            if in_transaction:
                self.rollback()
            outcome = (unit, None, as_storage_error(error, self._path))
        self._hand_back([outcome])

    def _hand_back(self, outcomes: list[Outcome]) -> None:
        """To the loop at the job's end, all at once (one wake-up)."""
        for unit, _, _ in outcomes:
            unit.handed_back = True
        self._answers.extend(outcomes)

    # -- what the loop's rounds (loop_rounds.py) use --------------------------

    @property
    def db(self) -> sqlite3.Connection:
        return self._db

    @property
    def path(self) -> Path:
        return self._path

    def turn_without_waiting(self) -> bool:
        """Whether this writer may write now without waiting for another
        worker: a lone server always; a worker holding the file's write turn,
        or taking it now that it is free."""
        if self._turn is None or self._turn_held:
            return True
        self._turn_held = self._turn.take_without_waiting()
        return self._turn_held

    def give_turn(self) -> None:
        """After a round's COMMIT (or its end without one): the other workers'
        writers may go."""
        if self._turn_held:
            self._turn_held = False
            self._turn.give()

    def begin_without_waiting(self) -> bool:
        """BEGIN IMMEDIATE unless the file's write lock is taken (False)."""
        if self._db.in_transaction:
            return False  # left open by a ROLLBACK that failed: the thread's _begin ends it
        self._set_busy_timeout(LOOP_BUSY_TIMEOUT_MS)
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            return False
        return True

    def hand_to_thread(self, units: list[Unit], run: Callable[[], None],
                       answer: Callable[[list], None]) -> None:
        self._queue.put(LoopJob(units, run, answer, asyncio.get_running_loop()))

    def wait_for_turn(self) -> None:
        """On the thread: until the file's write turn is this worker's (the
        kernel wakes it when another worker gives it back)."""
        if self._turn is not None and not self._turn_held:
            self._turn_held = self._turn.take()

    def run_units(self, units: list[Unit]) -> None:
        """On the thread: the units as a round of the thread's own."""
        self._set_busy_timeout(BUSY_TIMEOUT_MS)
        self.wait_for_turn()
        self._run(units)

    def run_each_alone(self, units: list[Unit]) -> None:
        """On the thread: one unit failed in a round on the loop, rolled back."""
        self._set_busy_timeout(BUSY_TIMEOUT_MS)
        self.wait_for_turn()
        for unit in units:
            self._run_alone(unit)

    def commit_loop_round(self, units: list[Unit], results: list[Any]) -> None:
        """On the thread: the COMMIT of a round run on the loop."""
        try:
            self._db.execute("COMMIT")
            self.commits += 1
        except BaseException as error:  # noqa: BLE001 - as in _run_batch and _run_alone
            self.rollback()
            if len(units) == 1:  # nobody to share with: never run twice
                self._hand_back([(units[0], None, as_storage_error(error, self._path))])
            else:
                self.run_each_alone(units)
            return
        self._hand_back([(unit, result, None) for unit, result in zip(units, results)])

    def _set_busy_timeout(self, ms: int) -> None:
        if self._busy_timeout_ms != ms:
            self._db.execute(f"PRAGMA busy_timeout = {ms}")
            self._busy_timeout_ms = ms
