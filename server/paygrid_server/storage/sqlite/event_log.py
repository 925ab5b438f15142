"""EventLog on SQLite. seq is taken at INSERT by the one writer, so seq order
is commit order: a reader that saw seq n can never see a smaller one later."""

from __future__ import annotations

from paygrid_server.domain.model.event import Event
from paygrid_server.storage.event_signal import EventSignal
from paygrid_server.storage.event_rows import event_from_row
from paygrid_server.storage.event_rows import AGGREGATE_TYPES
from paygrid_server.storage.sqlite.database import SqliteDatabase
from paygrid_server.storage.event_positions import PRUNED_SQL
from paygrid_server.storage.sqlite.event_consumers import HIGH_WATER_SQL


class SqliteEventLog:
    def __init__(self, database: SqliteDatabase) -> None:
        self._reader = database.reader
        # Notified by the payment store after each commit that wrote events:
        # in this process, the only one that writes the file.
        self.signal = EventSignal()

    async def list_events(self, tenant_id: str, after_seq: int, type_prefix: str,
                          limit: int, subject: str = "") -> list[Event]:
        # substr, not LIKE: SQLite's LIKE ignores case, a type prefix must not.
        where = "tenant_id = ? AND seq > ? AND substr(type, 1, ?) = ?"
        params: tuple = (tenant_id, after_seq, len(type_prefix), type_prefix)
        if subject:
            # Every aggregate type named: the unique (tenant, type, id,
            # version) index then finds a subject's few events directly.
            where += f" AND aggregate_type IN {AGGREGATE_TYPES} AND aggregate_id = ?"
            params += (subject,)
        rows = await self._reader.execute_fetchall(
            f"SELECT * FROM events WHERE {where} ORDER BY seq LIMIT ?", params + (limit,))
        return [event_from_row(row) for row in rows]

    async def pruned_through(self) -> int:
        rows = await self._reader.execute_fetchall(PRUNED_SQL)
        return rows[0][0]

    async def list_all_events(self, after_seq: int, limit: int) -> list[Event]:
        rows = await self._reader.execute_fetchall(
            "SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))
        return [event_from_row(row) for row in rows]

    async def get_event(self, event_id: str) -> Event | None:
        rows = await self._reader.execute_fetchall(
            "SELECT * FROM events WHERE event_id = ?", (event_id,))
        return event_from_row(rows[0]) if rows else None

    async def last_seq(self) -> int:
        rows = await self._reader.execute_fetchall(HIGH_WATER_SQL)
        return rows[0][0]

    def changes(self) -> int:
        return self.signal.count

    async def wait_for_change(self, seen: int, timeout_s: float) -> bool:
        return await self.signal.wait(seen, timeout_s)
