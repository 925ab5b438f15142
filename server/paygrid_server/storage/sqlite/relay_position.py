"""The relay's cursor on SQLite (storage/relay_position_rows.py)."""

from __future__ import annotations

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
