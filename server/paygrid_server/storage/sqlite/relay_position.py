"""The relay's cursor on SQLite (storage/relay_position_rows.py)."""

from __future__ import annotations

import asyncio
import sqlite3

from paygrid_server.domain.model import clock
from paygrid_server.storage.relay_position_rows import LOAD_SQL, RELAY_NAME, RELAY_TENANT, SAVE_SQL
from paygrid_server.storage.sqlite.database import SqliteDatabase


class SqliteRelayPosition:
    def __init__(self, database: SqliteDatabase) -> None:
        self._database = database

    async def load(self) -> int:
        rows = await self._database.reader.execute_fetchall(
            LOAD_SQL.format("?", "?"), (RELAY_TENANT, RELAY_NAME))
        return rows[0][0] if rows else 0

    async def save(self, cursor: int) -> None:
        def save(db: sqlite3.Connection) -> None:
            db.execute(SAVE_SQL.format("?", "?", "?", "?"),
                       (RELAY_TENANT, RELAY_NAME, cursor, clock.now_us()))
        await self._database.write(save)


class SqliteRelayLeadership:
    """One server per SQLite file (storage/database_lock.py): it always leads."""

    def __init__(self) -> None:
        self.lost = asyncio.Event()  # never set

    async def acquire(self) -> None:
        return None

    async def release(self) -> None:
        return None
