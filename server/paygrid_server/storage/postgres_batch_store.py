"""BatchStore on PostgreSQL, sharing the pool with payments.

Batches run to a million items, so items are written and read a chunk per
statement: each column of a chunk goes as one array parameter and unnest()
turns the arrays back into rows (one round trip, one plan, any chunk size).

Across replicas: ingest locks the batch's row (SELECT ... FOR UPDATE) for
its transaction, so the same reference arriving on two replicas at once is
classified once (stored, duplicate, conflict or resend); the unique
(batch_uid, reference) constraint refuses a second copy whatever happens,
loudly (the call fails) rather than by dropping an item.
Groups are work units any replica claims (claim_group): a replica takes a
transaction-scoped advisory lock on the batch (pg_try_advisory_xact_lock:
a batch another replica is claiming from right now is skipped, not waited
for), counts the batch's live leases against its parallelism and leases the
lowest QUEUED or expired group (FOR UPDATE SKIP LOCKED). Lease times are the
database's clock, so replicas' clocks may differ. Every write under a lease
is fenced by the group's claim count (see ports/group_queue.py GroupLease).
"""

from __future__ import annotations

from typing import Awaitable, Callable, Iterator, Sequence, TypeVar

import asyncpg

from paygrid_server.domain.batch import (
    Batch,
    BatchCounts,
    BatchGroup,
    BatchHeader,
    BatchItem,
    BatchItemStatus,
    BatchStatus,
)
from paygrid_server.domain.payment import Failure
from paygrid_server.ports.batch_store import IngestOutcome
from paygrid_server.ports.group_queue import DoneGroup, GroupLease
from paygrid_server.storage.batch_item_ingest import sort_incoming
from paygrid_server.storage.batch_rows import ITEM_COLUMNS as _ITEM_COLUMNS
from paygrid_server.storage.batch_rows import batch_from_row as _batch
from paygrid_server.storage.batch_rows import item_from_row as _item
from paygrid_server.storage.failure_columns import failure_columns
from paygrid_server.storage.postgres_database import PostgresDatabase


# Rows per statement: arrays have no parameter limit, but a bounded chunk
# bounds one statement's time (statement_timeout) and the memory of its
# arrays on both sides.
CHUNK_ROWS = 5_000

T = TypeVar("T")


def _chunks(rows: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), CHUNK_ROWS):
        yield rows[start:start + CHUNK_ROWS]


def _columns(rows: Sequence[tuple]) -> list[list]:
    """Rows as one list per column: the arrays unnest() takes."""
    return [list(column) for column in zip(*rows)]


_INSERT_ITEMS = (
    f"INSERT INTO batch_items ({_ITEM_COLUMNS}, batch_uid, content_digest, submission) "
    f"SELECT {_ITEM_COLUMNS}, $16::text, content_digest, $17::int FROM unnest("
    "$1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bigint[], "
    "$8::text[], $9::text[], $10::int[], $11::int[], $12::text[], $13::text[], $14::text[], "
    "$15::text[], $18::text[]) AS item (seq, reference, payee, currency, amount_minor, "
    "requested_channel, requested_at_us, channel, status, attempt, group_no, channel_reference, "
    "failure_reason, failure_message, failure_decline_code, content_digest)")

# An item's state: everything that changes after it is stored.
_SAVE_STATES = (
    "UPDATE batch_items SET status = state.status, attempt = state.attempt, "
    "group_no = state.group_no, channel_reference = state.channel_reference, "
    "failure_reason = state.failure_reason, failure_message = state.failure_message, "
    "failure_decline_code = state.failure_decline_code "
    "FROM unnest($2::bigint[], $3::text[], $4::int[], $5::int[], $6::text[], $7::text[], "
    "$8::text[], $9::text[]) AS state (seq, status, attempt, group_no, channel_reference, "
    "failure_reason, failure_message, failure_decline_code) "
    "WHERE batch_items.batch_uid = $1 AND batch_items.seq = state.seq")


# The planner cannot know how many items the batch being written has (its
# statistics lag, and a new batch_uid looks rare), so it would join a chunk
# to the batch's rows by scanning them all (batch_items_by_status starts
# with batch_uid): per chunk, O(batch), which is quadratic over a 1M-item
# batch. A chunk is at most CHUNK_ROWS rows: one primary-key lookup each.
_LOOKUPS_BY_KEY = ("SET LOCAL enable_hashjoin = off", "SET LOCAL enable_mergejoin = off",
                   "SET LOCAL enable_bitmapscan = off")

_BY_GROUP = ("SET LOCAL enable_seqscan = off", "SET LOCAL enable_bitmapscan = off")

_IN_INDEX_ORDER = ("SET LOCAL enable_bitmapscan = off", "SET LOCAL enable_sort = off")

# Lookups by (batch_uid, reference), one index probe per reference (LATERAL
# ... LIMIT 1 keeps it a probe, whatever the estimates).
_STORED_BY_REFERENCE = (
    f"SELECT {', '.join(f'item.{c.strip()}' for c in _ITEM_COLUMNS.split(','))}, "
    "item.submission, item.content_digest FROM unnest($2::text[]) AS wanted (reference) "
    "CROSS JOIN LATERAL (SELECT * FROM batch_items WHERE batch_uid = $1 "
    "AND reference = wanted.reference LIMIT 1) AS item")


async def _by_key_lookups(db: asyncpg.Connection) -> None:
    for setting in _LOOKUPS_BY_KEY:
        await db.execute(setting)


async def _save_states(db: asyncpg.Connection, batch_uid: str, items: list[BatchItem]) -> None:
    await _by_key_lookups(db)
    for chunk in _chunks(items):
        await db.execute(_SAVE_STATES, batch_uid, *_columns(
            [(i.seq, i.status.value, i.attempt, i.group_no, i.channel_reference,
              *failure_columns(i.failure)) for i in chunk]))


def _rows_touched(status: str) -> int:
    """Rows an UPDATE touched, from its command tag ("UPDATE 3")."""
    return int(status.rsplit(" ", 1)[1])


# The database's clock in µs, fixed for a statement: every replica's leases
# are measured on one clock.
_NOW_US = "(extract(epoch FROM statement_timestamp()) * 1000000)::bigint"

_CLAIM_CANDIDATES = (
    "SELECT DISTINCT batch_uid FROM batch_groups WHERE status <> 'DONE' "
    f"AND (status = 'QUEUED' OR lease_expires_at_us < {_NOW_US}) LIMIT 32")

_CLAIM_IN_BATCH = (
    "WITH batch AS (SELECT parallelism, stopped_after FROM batches WHERE uid = $1), "
    "live AS (SELECT count(*) AS leases, count(*) FILTER (WHERE lease_owner = $2) AS mine "
    "    FROM batch_groups WHERE batch_uid = $1 "
    f"    AND status = 'LEASED' AND lease_expires_at_us >= {_NOW_US}), "
    "next AS (SELECT group_no FROM batch_groups WHERE batch_uid = $1 AND status <> 'DONE' "
    f"    AND (status = 'QUEUED' OR lease_expires_at_us < {_NOW_US}) "
    "    ORDER BY group_no LIMIT 1 FOR UPDATE SKIP LOCKED) "
    "UPDATE batch_groups g SET status = 'LEASED', lease_owner = $2, "
    f"lease_expires_at_us = {_NOW_US} + $3::bigint * 1000, lease_count = g.lease_count + 1 "
    "FROM next, batch, live WHERE g.batch_uid = $1 AND g.group_no = next.group_no "
    "AND live.leases < batch.parallelism AND live.mine * $4 < batch.parallelism "
    "RETURNING g.group_no, g.group_key, g.lease_count, batch.stopped_after")

# NOTIFY'd (at commit) when a group is queued or done: idle replicas claim
# at once and streams learn of groups done elsewhere (LISTEN, watch_groups).
_GROUPS_CHANGED = "paygrid_batch_groups"
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
    return _rows_touched(status) == 1


class PostgresBatchStore:
    # Also the group queue (ports/group_queue.py): groups are durable,
    # leased to any replica.
    durable = True

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database

    async def insert_batch(self, batch: Batch) -> Batch | None:
        h = batch.header
        inserted = await self._database.write(
            "fetchval", "INSERT INTO batches (tenant_id, batch_id, uid, payer, grouping, max_group_size, "
            "parallelism, fingerprint, status, submissions, created_at_us, "
            "submission_started_at_us, failure_policy) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
            "ON CONFLICT (tenant_id, batch_id) DO NOTHING RETURNING true",
            batch.tenant_id, batch.batch_id, batch.uid, h.payer, h.grouping.value,
            h.max_group_size, h.parallelism, batch.fingerprint, batch.status.value,
            batch.submissions, batch.created_at_us, batch.submission_started_at_us,
            h.failure_policy.value)
        if inserted:
            return None
        return await self.get_batch(batch.tenant_id, batch.batch_id)

    async def get_batch(self, tenant_id: str, batch_id: str) -> Batch | None:
        row = await self._database.read(
            "fetchrow", "SELECT * FROM batches WHERE tenant_id = $1 AND batch_id = $2", tenant_id, batch_id)
        return _batch(row) if row else None

    async def start_submission(self, batch_uid: str, header: BatchHeader,
                               started_at_us: int) -> tuple[int, int, int]:
        async with self._database.transaction() as db:
            submission = await db.fetchval(
                "UPDATE batches SET submissions = submissions + 1, status = 'RECEIVING', "
                "max_group_size = $1, parallelism = $2, submission_started_at_us = $3 "
                "WHERE uid = $4 RETURNING submissions",
                header.max_group_size, header.parallelism, started_at_us, batch_uid)
            max_seq, max_group = await db.fetchrow(
                "SELECT (SELECT coalesce(max(seq), 0) FROM batch_items WHERE batch_uid = $1), "
                "(SELECT coalesce(max(group_no), 0) FROM batch_groups WHERE batch_uid = $1)",
                batch_uid)
        return submission, max_seq + 1, max_group + 1

    async def insert_items(self, batch_uid: str, submission: int, items: list[BatchItem],
                           unstored_rejections: int) -> IngestOutcome:
        outcome = IngestOutcome()
        async with self._database.transaction() as db:
            # Ingest of one batch, one transaction at a time, whichever replica.
            await db.execute("SELECT 1 FROM batches WHERE uid = $1 FOR UPDATE", batch_uid)
            existing: dict[str, asyncpg.Record | object] = {}
            for chunk in _chunks([item.reference for item in items]):
                existing.update({row["reference"]: row for row in await db.fetch(
                    _STORED_BY_REFERENCE, batch_uid, chunk)})
            fresh, resent = sort_incoming(items, existing, submission, outcome)
            for chunk in _chunks(fresh):
                columns = _columns([
                    (i.seq, i.reference, i.payee, i.amount.currency, i.amount.amount_minor,
                     i.requested_channel, i.requested_at_us, i.channel, i.status.value,
                     i.attempt, i.group_no, i.channel_reference, *failure_columns(i.failure),
                     i.content_digest()) for i in chunk])
                await db.execute(_INSERT_ITEMS, *columns[:15], batch_uid, submission,
                                 columns[15])
            # Seen in this submission now: a second copy later in the stream is a duplicate.
            if resent:
                await _by_key_lookups(db)
            for chunk in _chunks(resent):
                await db.execute("UPDATE batch_items SET submission = $1 "
                                 "WHERE batch_uid = $2 AND seq = ANY($3::bigint[])",
                                 submission, batch_uid, chunk)
            unstored = unstored_rejections + len(outcome.refused)
            if unstored:
                await db.execute("UPDATE batches SET unstored_rejections = "
                                 "unstored_rejections + $1 WHERE uid = $2", unstored, batch_uid)
        outcome.new = fresh
        return outcome

    async def get_batch_by_uid(self, batch_uid: str) -> Batch | None:
        row = await self._database.read("fetchrow", "SELECT * FROM batches WHERE uid = $1",
                                        batch_uid)
        return _batch(row) if row else None

    async def queue_group(self, batch_uid: str, group: BatchGroup, parallelism: int) -> None:
        # `parallelism` is the batch's stored one (start_submission), read at claim.
        async with self._database.transaction() as db:
            await _by_key_lookups(db)
            await db.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            await db.execute(
                "INSERT INTO batch_groups (batch_uid, group_no, group_key, size, started_at_us, "
                "status) VALUES ($1, $2, $3, $4, 0, 'QUEUED')",
                batch_uid, group.group_no, group.key, len(group.items))
            await db.execute("UPDATE batch_items SET group_no = $1 "
                             "WHERE batch_uid = $2 AND seq = ANY($3::bigint[])",
                             group.group_no, batch_uid, [item.seq for item in group.items])
            await db.execute(f"NOTIFY {_GROUPS_CHANGED}")

    async def claim_group(self, owner: str, lease_ms: int) -> GroupLease | None:
        async with self._database.transaction() as db:
            await _lease_transaction(db)
            await db.execute("INSERT INTO batch_replicas (owner, seen_at_us) "
                             f"VALUES ($1, {_NOW_US}) ON CONFLICT (owner) "
                             "DO UPDATE SET seen_at_us = excluded.seen_at_us", owner)
            # Each live replica takes at most parallelism / replicas of a batch.
            replicas = await db.fetchval(
                "SELECT count(*) FROM batch_replicas "
                f"WHERE seen_at_us >= {_NOW_US} - $1::bigint * 1000", lease_ms)
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
            return await _holds(db, lease, f"lease_expires_at_us = {_NOW_US} + $4::bigint * 1000",
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
            # table) per group, quadratic over the batch (see _LOOKUPS_BY_KEY).
            for setting in _BY_GROUP:
                await db.execute(setting)
            rows = await db.fetch(
                f"SELECT {_ITEM_COLUMNS} FROM batch_items WHERE batch_uid = $1 "
                "AND group_no = $2 ORDER BY seq", batch_uid, group_no)
        return [_item(row) for row in rows]

    async def mark_group_processing(self, batch_uid: str, group: BatchGroup,
                                    lease: GroupLease | None = None) -> bool:
        # A group is formed from items as stored; only their status and
        # group number change when it starts, the same for all of them.
        async with self._database.transaction() as db:
            if lease is None:
                await db.execute(
                    "INSERT INTO batch_groups (batch_uid, group_no, group_key, size, "
                    "started_at_us, status) VALUES ($1, $2, $3, $4, $5, 'LEASED')",
                    batch_uid, group.group_no, group.key, len(group.items),
                    group.started_at_us)
            elif not await _holds(db, lease, "started_at_us = $4", group.started_at_us):
                return False
            await _by_key_lookups(db)
            processing = [item.seq for item in group.items
                          if item.status is BatchItemStatus.PROCESSING]
            for chunk in _chunks(processing):
                await db.execute("UPDATE batch_items SET status = 'PROCESSING', group_no = $1 "
                                 "WHERE batch_uid = $2 AND seq = ANY($3::bigint[])",
                                 group.group_no, batch_uid, chunk)
            return True

    async def save_group_results(self, batch_uid: str, group: BatchGroup,
                                 lease: GroupLease | None = None,
                                 stops_batch: str | None = None) -> bool:
        done = "status = 'DONE', completed_at_us = $4, started_at_us = $5, processed_by = $6"
        values = (group.completed_at_us or None, group.started_at_us,
                  lease.owner if lease else None)
        async with self._database.transaction() as db:
            if lease is not None:
                if not await _holds(db, lease, done, *values):
                    return False
            else:
                await db.execute("UPDATE batch_groups SET status = 'DONE', completed_at_us = $3, "
                                 "started_at_us = $4 WHERE batch_uid = $1 AND group_no = $2",
                                 batch_uid, group.group_no, *values[:2])
            await _save_states(db, batch_uid, group.items)
            await db.execute(f"NOTIFY {_GROUPS_CHANGED}")
            if stops_batch is not None:
                await db.execute("UPDATE batches SET stopped_after = "
                                 "coalesce(stopped_after, $1) WHERE uid = $2",
                                 stops_batch, batch_uid)
            return True

    async def save_items(self, batch_uid: str, items: list[BatchItem],
                         lease: GroupLease | None = None) -> bool:
        async with self._database.transaction() as db:
            if lease is not None and not await _holds(db, lease):
                return False
            await _save_states(db, batch_uid, items)
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
            f"submission_lease_expires_at_us = {_NOW_US} + $2::bigint * 1000 WHERE uid = $3 "
            "AND (submission_owner IS NULL OR submission_owner = $1 "
            f"OR submission_lease_expires_at_us < {_NOW_US})", owner, lease_ms, batch_uid)
        return _rows_touched(status) == 1

    async def renew_submission(self, batch_uid: str, owner: str, lease_ms: int) -> bool:
        status = await self._database.write(
            "execute", f"UPDATE batches SET submission_lease_expires_at_us = {_NOW_US} "
            "+ $1::bigint * 1000 WHERE uid = $2 AND submission_owner = $3",
            lease_ms, batch_uid, owner)
        return _rows_touched(status) == 1

    async def release_submission(self, batch_uid: str, owner: str) -> None:
        await self._database.write(
            "execute", "UPDATE batches SET submission_owner = NULL, "
            "submission_lease_expires_at_us = 0 WHERE uid = $1 AND submission_owner = $2",
            batch_uid, owner)

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
            await connection.add_listener(_GROUPS_CHANGED, notified)
        except BaseException:
            await self._database.pool.release(connection)
            raise

        async def stop() -> None:
            try:
                await connection.remove_listener(_GROUPS_CHANGED, notified)
            finally:
                await self._database.pool.release(connection)

        return stop

    async def reject_waiting_items(self, batch_uid: str, failure: Failure) -> int:
        status = await self._database.write(
            "execute", "UPDATE batch_items SET status = 'REJECTED', failure_reason = $1, "
            "failure_message = $2, failure_decline_code = $3 "
            "WHERE batch_uid = $4 AND status = 'RECEIVED'",
            *failure_columns(failure), batch_uid)
        return _rows_touched(status)

    async def items_after(self, batch_uid: str, after_seq: int, limit: int,
                          statuses: tuple[BatchItemStatus, ...] = ()) -> list[BatchItem]:
        # One range of batch_items_by_status per status, merged in seq order
        # (Merge Append): `status = ANY(...)` would walk every item after `after_seq`.
        statuses = tuple(dict.fromkeys(statuses))
        arms = [f"AND status = ${4 + n}" for n in range(len(statuses))] or [""]
        selects = [f"SELECT {_ITEM_COLUMNS} FROM batch_items "
                   f"WHERE batch_uid = $1 AND seq > $2 {arm} ORDER BY seq LIMIT $3"
                   for arm in arms]
        sql = selects[0] if len(selects) == 1 else (
            "SELECT * FROM (" + " UNION ALL ".join(f"({s})" for s in selects)
            + ") AS items ORDER BY seq LIMIT $3")
        async with self._database.transaction(readonly=True) as db:
            # Walk the index in seq order and stop at `limit`, rather than
            # fetch and sort every item after `after_seq` (what the planner
            # picks when it underestimates the batch; see _LOOKUPS_BY_KEY).
            for setting in _IN_INDEX_ORDER:
                await db.execute(setting)
            rows = await db.fetch(sql, batch_uid, after_seq, limit, *(s.value for s in statuses))
        return [_item(row) for row in rows]

    async def counts(self, batch_uid: str) -> BatchCounts:
        async with self._database.transaction("repeatable_read", readonly=True) as db:
            rows = await db.fetch(
                "SELECT status, count(*) FROM batch_items WHERE batch_uid = $1 GROUP BY status",
                batch_uid)
            unstored = await db.fetchval(
                "SELECT unstored_rejections FROM batches WHERE uid = $1", batch_uid) or 0
        by_status = {BatchItemStatus(status): n for status, n in rows}
        rejected = by_status.get(BatchItemStatus.REJECTED, 0) + unstored
        succeeded = by_status.get(BatchItemStatus.SUCCEEDED, 0)
        failed = by_status.get(BatchItemStatus.FAILED, 0)
        total = sum(by_status.values()) + unstored
        return BatchCounts(total, succeeded, failed, rejected,
                           total - succeeded - failed - rejected)

    async def group_processing_us(self, batch_uid: str) -> list[int]:
        rows = await self._database.read(
            "fetch", "SELECT completed_at_us - started_at_us FROM batch_groups "
            "WHERE batch_uid = $1 AND completed_at_us IS NOT NULL", batch_uid)
        return [row[0] for row in rows]

    async def set_status(self, batch_uid: str, status: BatchStatus) -> None:
        await self._database.write("execute", "UPDATE batches SET status = $1 WHERE uid = $2",
                                   status.value, batch_uid)

    async def finish_submission(self, batch_uid: str, status: BatchStatus, wall_us: int,
                                completed_at_us: int | None) -> None:
        await self._database.write(
            "execute", "UPDATE batches SET status = $1, wall_us_before = wall_us_before + $2, "
            "completed_at_us = coalesce($3, completed_at_us) WHERE uid = $4",
            status.value, wall_us, completed_at_us, batch_uid)

    async def interrupt_abandoned(self) -> int:
        # Replicas gone for an hour are forgotten (they count for an hour
        # at most: a live one is seen every claim poll).
        await self._database.write(
            "execute", f"DELETE FROM batch_replicas WHERE seen_at_us < {_NOW_US} - 3600000000")
        # Only batches no live replica holds: their submission lease is
        # free (released, or never taken) or expired.
        status = await self._database.write(
            "execute", "UPDATE batches SET status = 'INTERRUPTED', wall_us_before = wall_us_before + "
            "greatest(0, coalesce((SELECT max(completed_at_us) FROM batch_groups g "
            "        WHERE g.batch_uid = batches.uid) - submission_started_at_us, 0)) "
            "WHERE status IN ('RECEIVING', 'PROCESSING') AND (submission_owner IS NULL "
            f"OR submission_lease_expires_at_us < {_NOW_US})")
        return _rows_touched(status)
