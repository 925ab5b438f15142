"""The relay's cursor on PostgreSQL (storage/relay_position_rows.py)."""

from __future__ import annotations

from paygrid_server.domain.model import clock
from paygrid_server.storage.postgres.database import PostgresDatabase
from paygrid_server.storage.relay_position_rows import LOAD_SQL, RELAY_NAME, RELAY_TENANT, SAVE_SQL


class PostgresRelayPosition:
    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database

    async def load(self) -> int:
        cursor = await self._database.read("fetchval", LOAD_SQL.format("$1", "$2"),
                                           RELAY_TENANT, RELAY_NAME)
        return cursor or 0

    async def save(self, cursor: int) -> None:
        await self._database.write("execute", SAVE_SQL.format("$1", "$2", "$3", "$4"),
                                   RELAY_TENANT, RELAY_NAME, cursor, clock.now_us())
