"""BatchStore on PostgreSQL, sharing the pool with payments.

Batches run to a million items, so items are written and read a chunk per
statement: each column of a chunk goes as one array parameter and unnest()
turns the arrays back into rows (one round trip, one plan, any chunk size).

Across replicas: ingest locks the batch's row (SELECT ... FOR UPDATE) for
its transaction, so the same reference arriving on two replicas at once is
classified once (stored, duplicate, conflict or resend); the unique
(batch_uid, reference) constraint refuses a second copy whatever happens,
loudly (the call fails) rather than by dropping an item.
"""

from __future__ import annotations

import asyncpg

from paygrid_server.domain.model.batch import (
    Batch,
    BatchCounts,
    BatchGroup,
    BatchHeader,
    BatchItem,
    BatchItemStatus,
    BatchStatus,
)
from paygrid_server.domain.model.content_fingerprint import content_fingerprint
from paygrid_server.domain.model.payment import Failure
from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.domain.ports.batch_store import IngestOutcome
from paygrid_server.storage.batch_item_ingest import sort_incoming
from paygrid_server.storage.batch_rows import ITEM_COLUMNS as _ITEM_COLUMNS
from paygrid_server.storage.batch_rows import STORED_ITEM_COLUMNS
from paygrid_server.storage.batch_rows import batch_from_row as _batch
from paygrid_server.storage.batch_rows import item_from_row as _item
from paygrid_server.storage.batch_rows import counts_from_rows, item_insert_row
from paygrid_server.storage.failure_columns import failure_columns
from paygrid_server.storage.batch_group_events import completed
from paygrid_server.storage.postgres.batch_events import lock_batch, write_batch_event
from paygrid_server.storage.postgres.batch_group_events import save_and_report, write_group_events
from paygrid_server.storage.postgres.batch_sql import (
    GROUPS_CHANGED,
    IN_INDEX_ORDER,
    NOW_US,
    by_key_lookups,
    chunks,
    columns,
    mark_items_processing,
    rows_touched,
)
from paygrid_server.storage.postgres.database import PostgresDatabase

_INSERT_ITEMS = (
    f"INSERT INTO batch_items ({STORED_ITEM_COLUMNS}, batch_uid, content_digest, submission) "
    f"SELECT {STORED_ITEM_COLUMNS}, $16::text, content_digest, $17::int FROM unnest("
    "$1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bigint[], "
    "$8::text[], $9::text[], $10::int[], $11::int[], $12::text[], $13::text[], $14::text[], "
    "$15::text[], $18::text[]) AS item (seq, reference, payee, currency, amount_minor, "
    "requested_channel, requested_at_us, channel, status, attempt, group_no, channel_reference, "
    "failure_reason, failure_message, failure_decline_code, content_digest)")


def _content_digest(item: BatchItem) -> str:
    """The digest PostgreSQL still stores beside an item: replicas of releases
    before 0013, which compare it when an item is resent, may run beside this
    one during a rolling update. Nothing here reads it (an item's content is
    compared by its columns: storage/batch_item_ingest.py)."""
    return content_fingerprint(item.payee, item.amount.currency, item.amount.amount_minor,
                               item.requested_channel, item.requested_at_us)


# Lookups by (batch_uid, reference), one index probe per reference (LATERAL
# ... LIMIT 1 keeps it a probe, whatever the estimates).
_STORED_BY_REFERENCE = (
    f"SELECT {', '.join(f'item.{c.strip()}' for c in _ITEM_COLUMNS.split(','))}, "
    "item.submission FROM unnest($2::text[]) AS wanted (reference) "
    "CROSS JOIN LATERAL (SELECT * FROM batch_items WHERE batch_uid = $1 "
    "AND reference = wanted.reference LIMIT 1) AS item")



# How long a stored batch may wait for its first submission to start.
UNSTARTED_GRACE_US = 60_000_000


class PostgresBatchStore:
    def __init__(self, database: PostgresDatabase, encoder: SnapshotEncoder) -> None:
        self._database = database
        self.encoder = encoder  # the group queue writes events with it too

    async def insert_batch(self, batch: Batch) -> Batch | None:
        h = batch.header
        async with self._database.transaction() as db:
            inserted = await db.fetchval(
                "INSERT INTO batches (tenant_id, batch_id, uid, payer, grouping, "
                "max_group_size, parallelism, fingerprint, status, submissions, created_at_us, "
                "submission_started_at_us, failure_policy) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
                "ON CONFLICT (tenant_id, batch_id) DO NOTHING RETURNING true",
                batch.tenant_id, batch.batch_id, batch.uid, h.payer, h.grouping.value,
                h.max_group_size, h.parallelism, batch.fingerprint, batch.status.value,
                batch.submissions, batch.created_at_us, batch.submission_started_at_us,
                h.failure_policy.value)
            if inserted:  # the row is this transaction's own: nobody else can lock it yet
                await write_batch_event(db, self.encoder, batch.uid, None)
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
            status_before = await lock_batch(db, batch_uid)
            submission = await db.fetchval(
                "UPDATE batches SET submissions = submissions + 1, status = 'RECEIVING', "
                "max_group_size = $1, parallelism = $2, submission_started_at_us = $3 "
                "WHERE uid = $4 RETURNING submissions",
                header.max_group_size, header.parallelism, started_at_us, batch_uid)
            max_seq, max_group = await db.fetchrow(
                "SELECT (SELECT coalesce(max(seq), 0) FROM batch_items WHERE batch_uid = $1), "
                "(SELECT coalesce(max(group_no), 0) FROM batch_groups WHERE batch_uid = $1)",
                batch_uid)
            await write_batch_event(db, self.encoder, batch_uid, status_before)
        return submission, max_seq + 1, max_group + 1

    async def insert_items(self, batch_uid: str, submission: int, items: list[BatchItem],
                           unstored_rejections: int) -> IngestOutcome:
        outcome = IngestOutcome()
        async with self._database.transaction() as db:
            # Ingest of one batch, one transaction at a time, whichever replica.
            # A lock of its own, not the batch row's: groups saving their
            # results take the batch row for their commit's tail
            # (batch_group_events.py), and need not wait for a whole ingest.
            await db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 11))", batch_uid)
            existing: dict[str, asyncpg.Record | object] = {}
            for chunk in chunks([item.reference for item in items]):
                existing.update({row["reference"]: row for row in await db.fetch(
                    _STORED_BY_REFERENCE, batch_uid, chunk)})
            fresh, resent = sort_incoming(items, existing, submission, outcome)
            # The batch row before any item row, as every writer takes them
            # (batch_group_events.py): no deadlock with a group's results.
            unstored = unstored_rejections + len(outcome.refused)
            if unstored:
                await db.execute("UPDATE batches SET unstored_rejections = "
                                 "unstored_rejections + $1 WHERE uid = $2", unstored, batch_uid)
            for chunk in chunks(fresh):
                arrays = columns([(*item_insert_row(i), _content_digest(i)) for i in chunk])
                await db.execute(_INSERT_ITEMS, *arrays[:15], batch_uid, submission, arrays[15])
            # Seen in this submission now: a second copy later in the stream is a duplicate.
            if resent:
                await by_key_lookups(db)
            for chunk in chunks(resent):
                await db.execute("UPDATE batch_items SET submission = $1 "
                                 "WHERE batch_uid = $2 AND seq = ANY($3::bigint[])",
                                 submission, batch_uid, chunk)
        outcome.new = fresh
        return outcome

    async def get_batch_by_uid(self, batch_uid: str) -> Batch | None:
        row = await self._database.read("fetchrow", "SELECT * FROM batches WHERE uid = $1",
                                        batch_uid)
        return _batch(row) if row else None

    # Without a lease: the group queue in memory (one process) calls these;
    # the durable queue's leased, fenced versions are in group_queue.py.

    async def mark_group_processing(self, batch_uid: str, group: BatchGroup) -> None:
        async with self._database.transaction() as db:
            await db.execute(
                "INSERT INTO batch_groups (batch_uid, group_no, group_key, size, "
                "started_at_us, status) VALUES ($1, $2, $3, $4, $5, 'LEASED')",
                batch_uid, group.group_no, group.key, len(group.items), group.started_at_us)
            await mark_items_processing(db, batch_uid, group)

    async def save_group_results(self, batch_uid: str, group: BatchGroup) -> None:
        async with self._database.transaction() as db:
            completes = rows_touched(await db.execute(
                "UPDATE batch_groups SET status = 'DONE', completed_at_us = $3, "
                "started_at_us = $4 WHERE batch_uid = $1 AND group_no = $2 "
                "AND status <> 'DONE'", batch_uid, group.group_no,
                group.completed_at_us or None, group.started_at_us)) == 1
            if completes:  # its items are stored with their events
                await write_group_events(db, self.encoder, batch_uid, [completed(group)])
            else:  # saved again: only a change is reported
                await save_and_report(db, self.encoder, batch_uid, group.items)
            await db.execute(f"NOTIFY {GROUPS_CHANGED}")

    async def save_items(self, batch_uid: str, items: list[BatchItem]) -> None:
        async with self._database.transaction() as db:
            await save_and_report(db, self.encoder, batch_uid, items)

    async def reject_waiting_items(self, batch_uid: str, failure: Failure) -> int:
        status = await self._database.write(
            "execute", "UPDATE batch_items SET status = 'REJECTED', failure_reason = $1, "
            "failure_message = $2, failure_decline_code = $3 "
            "WHERE batch_uid = $4 AND status = 'RECEIVED'",
            *failure_columns(failure), batch_uid)
        return rows_touched(status)

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
            # picks when it underestimates the batch; see batch_sql.LOOKUPS_BY_KEY).
            for setting in IN_INDEX_ORDER:
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
        return counts_from_rows(rows, unstored)

    async def group_processing_us(self, batch_uid: str) -> list[int]:
        rows = await self._database.read(
            "fetch", "SELECT completed_at_us - started_at_us FROM batch_groups "
            "WHERE batch_uid = $1 AND completed_at_us IS NOT NULL", batch_uid)
        return [row[0] for row in rows]

    async def set_status(self, batch_uid: str, status: BatchStatus) -> None:
        async with self._database.transaction() as db:
            status_before = await lock_batch(db, batch_uid)
            await db.execute("UPDATE batches SET status = $1 WHERE uid = $2",
                             status.value, batch_uid)
            await write_batch_event(db, self.encoder, batch_uid, status_before)

    async def finish_submission(self, batch_uid: str, status: BatchStatus, wall_us: int,
                                completed_at_us: int | None) -> None:
        async with self._database.transaction() as db:
            status_before = await lock_batch(db, batch_uid)
            await db.execute(
                "UPDATE batches SET status = $1, wall_us_before = wall_us_before + $2, "
                "completed_at_us = coalesce($3, completed_at_us) WHERE uid = $4",
                status.value, wall_us, completed_at_us, batch_uid)
            await write_batch_event(db, self.encoder, batch_uid, status_before)

    async def interrupt_abandoned(self) -> int:
        # Replicas gone for an hour are forgotten (they count for an hour
        # at most: a live one is seen every claim poll).
        await self._database.write(
            "execute", f"DELETE FROM batch_replicas WHERE seen_at_us < {NOW_US} - 3600000000")
        # Only batches no live replica holds: their submission lease is
        # free (released, or never taken) or expired.
        async with self._database.transaction() as db:
            # Locked first (the condition checked again on each row as locked):
            # the events say what this UPDATE changed, no more.
            # A batch never started (submissions = 0) is between its INSERT and
            # its submission lease on a live replica, for milliseconds: it is
            # abandoned only once UNSTARTED_GRACE_US has passed (before, the
            # sweep marked fresh batches INTERRUPTED, and their events said so).
            stopped = await db.fetch(
                "SELECT uid, status FROM batches WHERE status IN ('RECEIVING', 'PROCESSING') "
                "AND (submission_owner IS NULL "
                f"OR submission_lease_expires_at_us < {NOW_US}) "
                f"AND (submissions > 0 OR created_at_us < {NOW_US} - $1::bigint) "
                "ORDER BY uid FOR UPDATE", UNSTARTED_GRACE_US)
            uids = [row["uid"] for row in stopped]
            status = await db.execute(
                "UPDATE batches SET status = 'INTERRUPTED', wall_us_before = wall_us_before + "
                "greatest(0, coalesce((SELECT max(completed_at_us) FROM batch_groups g "
                "        WHERE g.batch_uid = batches.uid) - submission_started_at_us, 0)) "
                "WHERE uid = ANY($1::text[])", uids)
            for row in stopped:
                await write_batch_event(db, self.encoder, row["uid"], row["status"])
        return rows_touched(status)
