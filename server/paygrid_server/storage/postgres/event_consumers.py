"""Named consumers' cursors and retention's deletes on PostgreSQL.

An ack and a pruning chunk meet on the event_retention row: the ack reads
it FOR SHARE, a chunk locks it FOR UPDATE before it reads the smallest
consumer cursor. So a chunk either sees a consumer saved concurrently or
the ack sees the chunk's new mark (and refuses a cursor now expired):
never an ack saved below what a chunk is deleting.
"""

from __future__ import annotations

from paygrid_server.domain.ports.event_consumers import AckOutcome, AckResult
from paygrid_server.storage.event_positions import ack_result, last_prunable_seq
from paygrid_server.storage.postgres.database import PostgresDatabase
from paygrid_server.storage.postgres.event_sequencer import HIGH_WATER_SQL, sequence_events

# pg_try_advisory_xact_lock(class, schema): one pruner per schema (advisory
# locks are database-wide; schemas sharing a database prune independently).
RETENTION_LOCK_CLASS = 0x70677202  # "pg" "r" 2
RETENTION_LOCK_SQL = "SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()))"


class PostgresEventConsumers:
    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database

    async def save_cursor(self, tenant_id: str, name: str, up_to: int,
                          now_us: int) -> AckResult:
        async with self._database.transaction() as db:
            pruned = await db.fetchval(
                "SELECT pruned_through_seq FROM event_retention FOR SHARE")
            saved = await db.fetchval(
                "SELECT cursor FROM event_consumers WHERE tenant_id = $1 AND name = $2 "
                "FOR UPDATE", tenant_id, name)
            result = ack_result(saved, up_to, await db.fetchval(HIGH_WATER_SQL), pruned)
            if result.outcome is AckOutcome.SAVED:
                # greatest(): a concurrent first ack of the same new consumer
                # (no row to lock above) keeps the higher cursor too.
                return AckResult(AckOutcome.SAVED, await db.fetchval(
                    "INSERT INTO event_consumers VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (tenant_id, name) DO UPDATE SET "
                    "cursor = greatest(event_consumers.cursor, excluded.cursor), "
                    "updated_at_us = excluded.updated_at_us RETURNING cursor",
                    tenant_id, name, result.cursor, now_us))
            return result

    async def saved_cursor(self, tenant_id: str, name: str) -> int | None:
        return await self._database.read(
            "fetchval", "SELECT cursor FROM event_consumers WHERE tenant_id = $1 AND name = $2",
            tenant_id, name)

    async def delete_consumer(self, tenant_id: str, name: str) -> bool:
        status = await self._database.write(
            "execute", "DELETE FROM event_consumers WHERE tenant_id = $1 AND name = $2",
            tenant_id, name)
        return status != "DELETE 0"

    async def prune_chunk(self, older_than_us: int, max_rows: int) -> int | None:
        # Only numbered rows are pruned: without readers nobody else numbers
        # them, and a log nobody reads must still shrink.
        await sequence_events(self._database)
        async with self._database.transaction() as db:
            # One replica prunes at a time; the others skip, not queue.
            if not await db.fetchval(RETENTION_LOCK_SQL, RETENTION_LOCK_CLASS):
                return None
            pruned = await db.fetchval(
                "SELECT pruned_through_seq FROM event_retention FOR UPDATE")
            floor = await db.fetchval("SELECT min(cursor) FROM event_consumers")
            oldest = await db.fetch("SELECT seq, occurred_at_us FROM events WHERE seq > $1 "
                                    "ORDER BY seq LIMIT $2", pruned, max_rows)
            last = last_prunable_seq(((r["seq"], r["occurred_at_us"]) for r in oldest),
                                     older_than_us, floor)
            if last is None:
                return 0
            status = await db.execute("DELETE FROM events WHERE seq > $1 AND seq <= $2",
                                      pruned, last)
            await db.execute("UPDATE event_retention SET pruned_through_seq = $1", last)
            return int(status.rsplit(" ", 1)[1])
