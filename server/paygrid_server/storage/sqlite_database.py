"""The SQLite file every store shares: WAL, synchronous=FULL, migrations.

One writer connection behind an asyncio lock (SQLite has one writer anyway,
and two writer connections would only wait on each other), one reader
connection so reads never see another task's open transaction.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import aiosqlite

from paygrid_server.storage.sqlite_migrations import migrate

BUSY_TIMEOUT_MS = 5_000


class SqliteDatabase:
    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self.reader = reader
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> "SqliteDatabase":
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await cls._connect(path)
        await writer.execute("PRAGMA journal_mode = WAL")
        await migrate(writer)
        reader = await cls._connect(path)
        return cls(writer, reader)

    @staticmethod
    async def _connect(path: Path) -> aiosqlite.Connection:
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        for pragma in (f"busy_timeout = {BUSY_TIMEOUT_MS}", "synchronous = FULL",
                       "foreign_keys = ON"):
            await db.execute(f"PRAGMA {pragma}")
        return db

    async def close(self) -> None:
        await self.reader.close()
        await self._writer.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; committed (durably) when the block ends."""
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")
