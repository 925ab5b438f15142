"""Named consumers' cursors and retention's deletes on SQLite: each one
writer unit, so the checks and the change are one transaction."""

from __future__ import annotations

import sqlite3

from paygrid_server.domain.ports.event_consumers import AckOutcome, AckResult
from paygrid_server.storage.event_positions import PRUNED_SQL, ack_result, last_prunable_seq
from paygrid_server.storage.sqlite.database import SqliteDatabase

# seq is AUTOINCREMENT: sqlite_sequence remembers the highest ever given,
# even when retention deleted every event.
HIGH_WATER_SQL = "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)"


class SqliteEventConsumers:
    def __init__(self, database: SqliteDatabase) -> None:
        self._database = database

    async def save_cursor(self, tenant_id: str, name: str, up_to: int,
                          now_us: int) -> AckResult:
        def save(db: sqlite3.Connection) -> AckResult:
            row = db.execute("SELECT cursor FROM event_consumers WHERE tenant_id = ? AND name = ?",
                             (tenant_id, name)).fetchone()
            result = ack_result(row[0] if row else None, up_to,
                                db.execute(HIGH_WATER_SQL).fetchone()[0],
                                db.execute(PRUNED_SQL).fetchone()[0])
            if result.outcome is AckOutcome.SAVED:
                db.execute("INSERT INTO event_consumers VALUES (?, ?, ?, ?) "
                           "ON CONFLICT (tenant_id, name) DO UPDATE SET cursor = excluded.cursor, "
                           "updated_at_us = excluded.updated_at_us",
                           (tenant_id, name, result.cursor, now_us))
            return result
        return await self._database.write(save)

    async def saved_cursor(self, tenant_id: str, name: str) -> int | None:
        rows = await self._database.reader.execute_fetchall(
            "SELECT cursor FROM event_consumers WHERE tenant_id = ? AND name = ?",
            (tenant_id, name))
        return rows[0][0] if rows else None

    async def delete_consumer(self, tenant_id: str, name: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM event_consumers WHERE tenant_id = ? AND name = ?",
                              (tenant_id, name)).rowcount > 0
        return await self._database.write(delete)

    async def prune_chunk(self, older_than_us: int, max_rows: int) -> int | None:
        def prune(db: sqlite3.Connection) -> int:
            pruned = db.execute(PRUNED_SQL).fetchone()[0]
            floor = db.execute("SELECT min(cursor) FROM event_consumers").fetchone()[0]
            oldest = db.execute("SELECT seq, occurred_at_us FROM events WHERE seq > ? "
                                "ORDER BY seq LIMIT ?", (pruned, max_rows)).fetchall()
            last = last_prunable_seq(oldest, older_than_us, floor)
            if last is None:
                return 0
            deleted = db.execute("DELETE FROM events WHERE seq > ? AND seq <= ?",
                                 (pruned, last)).rowcount
            db.execute("UPDATE event_retention SET pruned_through_seq = ?", (last,))
            return deleted
        return await self._database.write(prune)
