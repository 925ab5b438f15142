"""GroupQueue on PostgreSQL: groups are durable work units any replica
claims (claim_group). A replica takes a transaction-scoped advisory lock on
the batch (pg_try_advisory_xact_lock: a batch another replica is claiming
from right now is skipped, not waited for), counts the batch's live leases
against its parallelism and leases the lowest QUEUED or expired group (FOR
UPDATE SKIP LOCKED). Lease times are the database's clock, so replicas'
clocks may differ. Every write under a lease is fenced by the group's claim
count (see domain/ports/group_queue.py GroupLease). A batch's submission is
leased the same way: one stream at a time, whichever replica.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import asyncpg

from paygrid_server.domain.model.batch import BatchGroup, BatchItem
from paygrid_server.domain.ports.group_queue import DoneGroup, GroupLease
from paygrid_server.storage.batch_rows import ITEM_COLUMNS as _ITEM_COLUMNS
from paygrid_server.storage.batch_rows import item_from_row as _item
from paygrid_server.storage.postgres.batch_sql import (
    BY_GROUP,
    GROUPS_CHANGED,
    NOW_US,
    by_key_lookups,
    mark_items_processing,
    rows_touched,
    save_states,
)
from paygrid_server.storage.batch_group_events import completed
from paygrid_server.storage.postgres.batch_group_events import write_group_events
from paygrid_server.storage.postgres.batch_store import PostgresBatchStore
from paygrid_server.storage.postgres.database import PostgresDatabase

_CLAIM_CANDIDATES = (
    "SELECT DISTINCT batch_uid FROM batch_groups WHERE status <> 'DONE' "
    f"AND (status = 'QUEUED' OR lease_expires_at_us < {NOW_US}) LIMIT 32")

_CLAIM_IN_BATCH = (
    "WITH batch AS (SELECT parallelism, stopped_after FROM batches WHERE uid = $1), "
    "live AS (SELECT count(*) AS leases, count(*) FILTER (WHERE lease_owner = $2) AS mine "
    "    FROM batch_groups WHERE batch_uid = $1 "
    f"    AND status = 'LEASED' AND lease_expires_at_us >= {NOW_US}), "
    "next AS (SELECT group_no FROM batch_groups WHERE batch_uid = $1 AND status <> 'DONE' "
    f"    AND (status = 'QUEUED' OR lease_expires_at_us < {NOW_US}) "
    "    ORDER BY group_no LIMIT 1 FOR UPDATE SKIP LOCKED) "
    "UPDATE batch_groups g SET status = 'LEASED', lease_owner = $2, "
    f"lease_expires_at_us = {NOW_US} + $3::bigint * 1000, lease_count = g.lease_count + 1 "
    "FROM next, batch, live WHERE g.batch_uid = $1 AND g.group_no = next.group_no "
    "AND live.leases < batch.parallelism AND live.mine * $4 < batch.parallelism "
    "RETURNING g.group_no, g.group_key, g.lease_count, batch.stopped_after")

LISTEN_NEEDS_POOL_CONNECTIONS = 3

_FENCE = ("WHERE batch_uid = $1 AND group_no = $2 AND status = 'LEASED' "
          "AND lease_count = $3")


# A replica frozen (a long GC pause, a stopped VM) inside a transaction would
# keep its group's row (or its batch's claim lock) locked, and FOR UPDATE
# SKIP LOCKED would skip that group for as long: the server ends such a
# transaction after this long idle, so the lease can run out and be taken.
LEASE_TRANSACTION_IDLE_TIMEOUT_MS = 5_000


async def _lease_transaction(db: asyncpg.Connection) -> None:
    await db.execute("SET LOCAL idle_in_transaction_session_timeout = "
                     f"{LEASE_TRANSACTION_IDLE_TIMEOUT_MS}")


async def _holds(db: asyncpg.Connection, lease: GroupLease, changes: str = "",
                 *params) -> bool:
    """Whether `lease` is still the group's latest claim (applying `changes`,
    parameters from $4, to the group if so); the row stays locked until the
    transaction ends, so no claim can come between the fence and the writes."""
    await _lease_transaction(db)
    status = await db.execute(
        f"UPDATE batch_groups SET {changes or 'lease_owner = lease_owner'} {_FENCE}",
        lease.batch_uid, lease.group_no, lease.token, *params)
    return rows_touched(status) == 1


class PostgresGroupQueue:
    durable = True  # groups outlive a replica: leased in the database

    def __init__(self, database: PostgresDatabase, store: PostgresBatchStore) -> None:
        self._database = database
        self._store = store

    async def queue_group(self, batch_uid: str, group: BatchGroup, parallelism: int) -> None:
        # `parallelism` is the batch's stored one (start_submission), read at claim.
        async with self._database.transaction() as db:
            await by_key_lookups(db)
            await db.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            await db.execute(
                "INSERT INTO batch_groups (batch_uid, group_no, group_key, size, started_at_us, "
                "status) VALUES ($1, $2, $3, $4, 0, 'QUEUED')",
                batch_uid, group.group_no, group.key, len(group.items))
            await db.execute("UPDATE batch_items SET group_no = $1 "
                             "WHERE batch_uid = $2 AND seq = ANY($3::bigint[])",
                             group.group_no, batch_uid, [item.seq for item in group.items])
            await db.execute(f"NOTIFY {GROUPS_CHANGED}")

    async def claim_group(self, owner: str, lease_ms: int) -> GroupLease | None:
        async with self._database.transaction() as db:
            await _lease_transaction(db)
            await db.execute("INSERT INTO batch_replicas (owner, seen_at_us) "
                             f"VALUES ($1, {NOW_US}) ON CONFLICT (owner) "
                             "DO UPDATE SET seen_at_us = excluded.seen_at_us", owner)
            # Each live replica takes at most parallelism / replicas of a batch.
            replicas = await db.fetchval(
                "SELECT count(*) FROM batch_replicas "
                f"WHERE seen_at_us >= {NOW_US} - $1::bigint * 1000", lease_ms)
            for (batch_uid,) in await db.fetch(_CLAIM_CANDIDATES):
                # Held to the end of this transaction: one claim at a time
                # per batch, so the parallelism count cannot be raced.
                if not await db.fetchval("SELECT pg_try_advisory_xact_lock("
                                         "hashtextextended($1, 7))", batch_uid):
                    continue
                row = await db.fetchrow(_CLAIM_IN_BATCH, batch_uid, owner, lease_ms, replicas)
                if row is not None:
                    return GroupLease(batch_uid, row["group_no"], row["group_key"], owner,
                                      row["lease_count"], row["stopped_after"])
        return None

    async def renew_group_lease(self, lease: GroupLease, lease_ms: int) -> bool:
        async with self._database.transaction() as db:
            return await _holds(db, lease, f"lease_expires_at_us = {NOW_US} + $4::bigint * 1000",
                                lease_ms)

    async def release_group_lease(self, lease: GroupLease) -> None:
        async with self._database.transaction() as db:
            await _holds(db, lease, "lease_expires_at_us = 0")

    def abandon_group_lease(self, lease: GroupLease) -> None:
        pass  # the lease runs out; whoever claims the group next settles it

    async def group_items(self, batch_uid: str, group_no: int) -> list[BatchItem]:
        async with self._database.transaction(readonly=True) as db:
            # One probe of batch_items_by_group: a planner whose statistics
            # lag the growing batch would scan the batch's items (or the
            # table) per group, quadratic over the batch (see batch_sql.LOOKUPS_BY_KEY).
            for setting in BY_GROUP:
                await db.execute(setting)
            rows = await db.fetch(
                f"SELECT {_ITEM_COLUMNS} FROM batch_items WHERE batch_uid = $1 "
                "AND group_no = $2 ORDER BY seq", batch_uid, group_no)
        return [_item(row) for row in rows]

    async def mark_group_processing(self, batch_uid: str, group: BatchGroup,
                                    lease: GroupLease) -> bool:
        async with self._database.transaction() as db:
            if not await _holds(db, lease, "started_at_us = $4", group.started_at_us):
                return False
            await mark_items_processing(db, batch_uid, group)
            return True

    async def save_group_results(self, batch_uid: str, group: BatchGroup, lease: GroupLease,
                                 stops_batch: str | None = None,
                                 next_may_start: bool = False) -> bool:
        # next_may_start is not for a durable queue: a group is marked under its own lease.
        done = "status = 'DONE', completed_at_us = $4, started_at_us = $5, processed_by = $6"
        async with self._database.transaction() as db:
            if not await _holds(db, lease, done, group.completed_at_us or None,
                                group.started_at_us, lease.owner):
                return False
            await db.execute(f"NOTIFY {GROUPS_CHANGED}")
            # The fence passed: the group goes from LEASED to DONE here, once.
            # Its items are stored with their events; the payloads are `group`
            # as stored, column for column (what else an item holds never
            # changes after its insert): no read back.
            await write_group_events(db, self._store.encoder, batch_uid, [completed(group)],
                                     stops_batch)
            return True

    async def save_items(self, batch_uid: str, items: list[BatchItem],
                         lease: GroupLease) -> bool:
        async with self._database.transaction() as db:
            if not await _holds(db, lease):
                return False
            await save_states(db, batch_uid, items)
            return True

    async def unfinished_groups(self, batch_uid: str) -> list[int]:
        rows = await self._database.read(
            "fetch", "SELECT group_no FROM batch_groups WHERE batch_uid = $1 "
            "AND status <> 'DONE' ORDER BY group_no", batch_uid)
        return [row[0] for row in rows]

    async def done_groups(self, batch_uid: str, group_nos: list[int]) -> list[DoneGroup]:
        rows = await self._database.read(
            "fetch", "SELECT group_no, group_key, started_at_us, completed_at_us, processed_by "
            "FROM batch_groups WHERE batch_uid = $1 AND group_no = ANY($2::int[]) "
            "AND status = 'DONE'", batch_uid, group_nos)
        return [DoneGroup(*row) for row in rows]

    async def stop_batch(self, batch_uid: str, cause: str) -> None:
        await self._database.write(
            "execute", "UPDATE batches SET stopped_after = coalesce(stopped_after, $1) "
            "WHERE uid = $2", cause, batch_uid)

    async def acquire_submission(self, batch_uid: str, owner: str, lease_ms: int) -> bool:
        status = await self._database.write(
            "execute", "UPDATE batches SET submission_owner = $1, "
            f"submission_lease_expires_at_us = {NOW_US} + $2::bigint * 1000 WHERE uid = $3 "
            "AND (submission_owner IS NULL OR submission_owner = $1 "
            f"OR submission_lease_expires_at_us < {NOW_US})", owner, lease_ms, batch_uid)
        return rows_touched(status) == 1

    async def renew_submission(self, batch_uid: str, owner: str, lease_ms: int) -> bool:
        status = await self._database.write(
            "execute", f"UPDATE batches SET submission_lease_expires_at_us = {NOW_US} "
            "+ $1::bigint * 1000 WHERE uid = $2 AND submission_owner = $3",
            lease_ms, batch_uid, owner)
        return rows_touched(status) == 1

    async def release_submission(self, batch_uid: str, owner: str) -> None:
        await self._database.write(
            "execute", "UPDATE batches SET submission_owner = NULL, "
            "submission_lease_expires_at_us = 0 WHERE uid = $1 AND submission_owner = $2",
            batch_uid, owner)

    async def expire_leases_of(self, owner: str) -> int:
        async with self._database.transaction() as db:
            status = await db.execute(
                "UPDATE batch_groups SET lease_expires_at_us = 0 "
                "WHERE status = 'LEASED' AND lease_owner = $1", owner)
            await db.execute("UPDATE batches SET submission_lease_expires_at_us = 0 "
                             "WHERE submission_owner = $1", owner)
            # Its share of each batch's parallelism goes to the live ones now,
            # not when its heartbeat would have aged out.
            await db.execute("DELETE FROM batch_replicas WHERE owner = $1", owner)
            if rows_touched(status):
                await db.execute(f"NOTIFY {GROUPS_CHANGED}")
        return rows_touched(status)

    async def watch_groups(self, changed: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        async def nothing() -> None:
            pass

        if self._database.pool.get_max_size() < LISTEN_NEEDS_POOL_CONNECTIONS:
            return nothing  # too small a pool to keep one for LISTEN: polling only
        # A pooled connection kept for LISTEN until stop() gives it back.
        connection = await self._database.pool.acquire()

        def notified(*_) -> None:
            changed()

        try:
            await connection.add_listener(GROUPS_CHANGED, notified)
        except BaseException:
            await self._database.pool.release(connection)
            raise

        async def stop() -> None:
            try:
                await connection.remove_listener(GROUPS_CHANGED, notified)
            finally:
                await self._database.pool.release(connection)

        return stop

    async def interrupt_abandoned(self) -> int:
        """Batches whose stream's replica died show INTERRUPTED (the store's
        sweep, also run at start-up)."""
        return await self._store.interrupt_abandoned()
