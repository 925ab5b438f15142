"""Every write of the process, on one thread that owns the writing
connection, with group commit.

A unit of work is a plain function of a sqlite3 connection that only
touches the database (it may run twice: see _run_batch). The thread takes
all units queued while it was busy (at most MAX_UNITS_PER_COMMIT), runs them
in one transaction and makes them durable with one COMMIT. Their callers
resume only after that COMMIT, so nothing is answered, and no channel is
called, on the strength of work that is not on disk.

Why not a statement at a time through aiosqlite: with synchronous=FULL each
COMMIT waits for the disk, and each statement awaited from the event loop
costs a loop turn while the write lock is held; both bounded paygrid at a
few hundred payments a second. Here a unit costs one hand-over to the thread
and one wake-up per commit.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import structlog

from paygrid_server.domain.ports.storage_errors import StorageFault, StorageUnavailable
from paygrid_server.storage.sqlite.none_binding import bind_none_directly
from paygrid_server.storage.sqlite.sqlite_faults import as_storage_error
from paygrid_server.storage.sqlite.write_turn import WriteTurn

T = TypeVar("T")
log = structlog.get_logger("paygrid.storage")

BUSY_TIMEOUT_MS = 5_000
# Units one COMMIT may carry: bounds how long a unit waits behind the ones
# queued before it, and how many run again alone when one of them fails.
MAX_UNITS_PER_COMMIT = 256
PRAGMAS = (f"busy_timeout = {BUSY_TIMEOUT_MS}", "journal_mode = WAL", "synchronous = FULL",
           "foreign_keys = ON")


@dataclass(slots=True)
class _Unit:
    work: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    in_transaction: bool  # False: runs on its own (migrations manage their own)
    handed_back: bool = False  # its outcome is on its way to its caller


_STOP = object()


# STRICT tables (3.37) and UPDATE ... FROM (3.33) are used.
MIN_SQLITE_VERSION = (3, 37, 0)


class SqliteTooOld(RuntimeError):
    pass


def connect(path: Path) -> sqlite3.Connection:
    """A connection with paygrid's pragmas; readers use the same settings."""
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        raise SqliteTooOld(
            f"paygrid needs SQLite >= {'.'.join(map(str, MIN_SQLITE_VERSION))}; this Python's "
            f"sqlite3 module has {sqlite3.sqlite_version}")
    bind_none_directly()
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    for pragma in PRAGMAS:
        db.execute(f"PRAGMA {pragma}")
    return db


def _closed_fault() -> StorageUnavailable:
    return StorageUnavailable(StorageFault.CLOSED, "the SQLite writer is closed")


def _settle(outcomes: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():
            continue  # its caller went away; the work itself is done (or failed)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class SqliteWriter:
    def __init__(self, path: Path, shared: bool = False) -> None:
        self._path = path
        self._shared = shared  # other processes (workers) write the file: take turns
        self._turn: WriteTurn | None = None
        self._turn_held = False
        # Not bounded here because its producers are: every unit comes from a
        # unary call (at most max_concurrent_calls), a batch stream's bounded
        # pipeline (max_concurrent_batch_streams of them) or the resolver,
        # and each waits for its unit before making another.
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="paygrid-sqlite-writer",
                                        daemon=True)
        self._ready = threading.Event()
        self._db: sqlite3.Connection | None = None
        self._open_error: BaseException | None = None
        self._closed = False
        self.commits = 0  # COMMITs made (fewer than units: that is group commit)
        self._thread.start()

    @classmethod
    async def open(cls, path: Path, shared: bool = False) -> "SqliteWriter":
        writer = cls(path, shared)
        await asyncio.to_thread(writer._ready.wait)
        if writer._open_error is not None:
            raise writer._open_error
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
        self._queue.put(_Unit(work, future, loop, in_transaction))
        return await future

    async def close(self) -> None:
        self._closed = True
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
            while True:
                units = [self._queue.get()]
                if self._turn is not None and units[0] is not _STOP:
                    # Units queued while it waits for its turn join this round.
                    self._turn_held = self._turn.take()
                try:
                    self._round(units)
                finally:
                    self._give_turn()
                if _STOP in units:
                    return
        finally:
            self._db.close()
            if self._turn is not None:
                self._turn.close()
            self._answer_left_over()

    def _round(self, units: list) -> None:
        """Runs and answers `units` with whatever else is queued (up to
        MAX_UNITS_PER_COMMIT in all); `units` ends with every one taken."""
        while len(units) < MAX_UNITS_PER_COMMIT:
            try:
                units.append(self._queue.get_nowait())
            except queue.Empty:
                break
        work = [u for u in units if u is not _STOP]
        try:
            self._run(work)
        except BaseException as error:  # noqa: BLE001 - the thread must outlive it
            # Every write of the process waits on this thread: if it
            # died, every later call would hang until its deadline.
            log.exception("storage.writer_round_failed")
            self._hand_back([(u, None, error) for u in work if not u.handed_back])

    def _answer_left_over(self) -> None:
        """Units queued behind the stop (from another event loop, say) get the
        fault instead of waiting for ever."""
        while True:
            try:
                unit = self._queue.get_nowait()
            except queue.Empty:
                return
            if unit is not _STOP:
                self._hand_back([(unit, None, _closed_fault())])

    def _begin(self) -> None:
        if self._db.in_transaction:
            self._rollback()  # left open by a ROLLBACK that itself failed
        self._db.execute("BEGIN IMMEDIATE")

    def _rollback(self) -> None:
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

    def _run(self, units: list[_Unit]) -> None:
        batch: list[_Unit] = []
        for unit in units:
            if unit.in_transaction:
                batch.append(unit)
                continue
            self._run_batch(batch)
            batch = []
            self._run_alone(unit)
        self._run_batch(batch)

    def _run_batch(self, units: list[_Unit]) -> None:
        """All units in one transaction. If any fails (or the commit does),
        everything is rolled back and each unit runs again in a transaction
        of its own, so only the failing unit fails. Failures are rare, and a
        SAVEPOINT around every unit would cost two statements per unit, each
        of which has to win the GIL back from the event loop."""
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
            self._rollback()
            for unit in units:
                self._run_alone(unit)
            return
        self._hand_back([(unit, result, None) for unit, result in zip(units, results)])

    def _run_alone(self, unit: _Unit) -> None:
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
                self._rollback()
            outcome = (unit, None, as_storage_error(error, self._path))
        self._hand_back([outcome])

    def _give_turn(self) -> None:
        if self._turn_held:
            self._turn_held = False
            self._turn.give()

    def _hand_back(self, outcomes: list[tuple[_Unit, Any, BaseException | None]]) -> None:
        # Its transaction is over: the turn goes back before the answers, whose
        # wake-ups of the event loop may keep this thread waiting for the GIL.
        # A later transaction of the round (units retried alone) waits in
        # SQLite's busy handler, as without turns.
        self._give_turn()
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for unit, result, error in outcomes:
            unit.handed_back = True
            by_loop.setdefault(unit.loop, []).append((unit.future, result, error))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:
                pass  # that event loop is closed: nobody is waiting any more
