"""The SQLite file every store shares: WAL, synchronous=FULL, migrations.

Writes go through one SqliteWriter (one thread, group commit; see
sqlite/writer.py); reads through one aiosqlite connection, so they never
see a unit of work that is not committed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

import aiosqlite

from paygrid_server.storage.database_lock import DatabaseLock
from paygrid_server.storage.sqlite.schema_migrations import migrate
from paygrid_server.storage.sqlite.connection import PRAGMAS
from paygrid_server.storage.sqlite.writer import SqliteWriter

T = TypeVar("T")


class SqliteDatabase:
    def __init__(self, lock: DatabaseLock, writer: SqliteWriter,
                 reader: aiosqlite.Connection, path: Path) -> None:
        self._lock = lock
        self.path = path
        self._also_close: list[Callable[[], None]] = []
        self._writer = writer
        self.reader = reader

    @classmethod
    async def open(cls, path: Path, inherited_lock_fd: int | None = None) -> "SqliteDatabase":
        """Held by this process until close (DatabaseLocked if another holds
        it), or by its supervisor when it is a worker (`inherited_lock_fd`:
        see storage/database_lock.py); whatever was opened is closed again
        when a later step fails."""
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = (DatabaseLock.take(path) if inherited_lock_fd is None
                else DatabaseLock.inherited(path, inherited_lock_fd))
        writer = reader = None
        try:
            # A worker's lock is inherited: other workers write the file too.
            writer = await SqliteWriter.open(path, shared=inherited_lock_fd is not None)
            await writer.alone(migrate)
            reader = await aiosqlite.connect(path, isolation_level=None)
            reader.row_factory = aiosqlite.Row
            for pragma in PRAGMAS:
                await reader.execute(f"PRAGMA {pragma}")
        except BaseException:
            if reader is not None:
                await reader.close()
            if writer is not None:
                await writer.close()
            lock.release()
            raise
        return cls(lock, writer, reader, path)

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `work` as one all-or-nothing unit; returns once it is durable."""
        return await self._writer.unit(work)

    def close_with(self, close: Callable[[], None]) -> None:
        """`close` (another connection to the file, say) runs at close, first."""
        self._also_close.append(close)

    async def close(self) -> None:
        for close in self._also_close:
            close()
        try:
            await self.reader.close()
            await self._writer.close()
        finally:
            self._lock.release()


def write_then_wake(write: Callable[[Callable[[sqlite3.Connection], T]], Awaitable[T]],
                    wake: Callable[[], None]) -> Callable[[Callable[[sqlite3.Connection], T]],
                                                          Awaitable[T]]:
    """`write`, then `wake` (the event log's watchers) after each commit or
    failure: every state-changing write writes events, and a spurious
    wake-up only costs a watcher one read."""
    async def write_and_wake(work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await write(work)
        finally:
            wake()
    return write_and_wake
