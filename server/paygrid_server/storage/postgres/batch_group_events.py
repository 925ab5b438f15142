"""The events of a batch group's results on PostgreSQL, written inside the
transaction that stores them (storage/batch_group_events.py says which):
under the group queue's fence, so a replica whose lease was lost writes
neither results nor events.

Versions are taken late: UPDATE batches ... RETURNING version locks the
batch row for the transaction's tail only (the items' one UPDATE, with
their versions, the events, the commit), so groups of one batch saved in
parallel wait for each other there, not for their fences or payloads.
Measured (bench_replicas.py, 3 replicas, 30k items, a loaded 2-core machine):
items written before the lock and their versions in a second UPDATE inside
it kept the lock longer (1,550-1,650 items/s against 2,300-2,850 without
events) than this one UPDATE inside it (2,450-2,550 against 3,400).
Lock order, the same for every writer: group row (the fence), batch row,
item rows. The batch's status events lock the batch row alone (lock_batch)
and only read items and groups; ingest (insert_items) serializes on an
advisory lock of its own and takes the batch row, if at all, before any
item row; a group's PROCESSING mark and a taken-over group's mid-charge
save lock their group's row and items, never the batch row. A
resubmission's settled items (save_and_report) lock items, then the batch
row: it runs before that submission's ingest, and no group holds them.
"""

from __future__ import annotations

import asyncpg

from paygrid_server.domain.model.batch import BatchItem
from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.storage.batch_group_events import GroupEvents, GroupReport, ItemChanges
from paygrid_server.storage.event_rows import EVENT_COLUMNS
from paygrid_server.storage.postgres.batch_sql import (
    by_key_lookups,
    groups_as_stored,
    save_states,
    stored_statuses,
    write_states,
)
from paygrid_server.storage.postgres.payment_events import notify_watchers

_INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"


async def write_group_events(db: asyncpg.Connection, encoder: SnapshotEncoder, batch_uid: str,
                             reports: list[GroupReport], stops_batch: str | None = None) -> None:
    """The reports' events, and every reported item saved (its state and its
    version); with `stops_batch`, the batch is stopped in the same statement
    that takes the versions (its row is locked once, late)."""
    events = GroupEvents(reports, encoder)
    # Whatever can go before the batch row is locked does: from the lock to
    # the commit, only the statements that need the versions.
    await by_key_lookups(db)
    await notify_watchers(db)  # delivered at commit, wherever it is sent
    batch = await db.fetchrow(
        "UPDATE batches SET version = version + $2, stopped_after = coalesce(stopped_after, $3) "
        "WHERE uid = $1 RETURNING tenant_id, batch_id, version",
        batch_uid, events.count, stops_batch)
    await db.executemany(_INSERT_EVENT, events.rows(batch["tenant_id"], batch["batch_id"],
                                                    batch["version"] - events.count))
    await write_states(db, batch_uid, events.items)


async def save_and_report(db: asyncpg.Connection, encoder: SnapshotEncoder, batch_uid: str,
                          items: list[BatchItem]) -> None:
    """Items saved outside a group's completion: the groups of those that
    changed into a reported status are reported again, as stored."""
    status_before = await stored_statuses(db, batch_uid, items)
    await save_states(db, batch_uid, items)
    changes = ItemChanges.of(items, status_before)
    if not changes.seqs:
        return
    reports = changes.reports(await groups_as_stored(db, batch_uid, changes.group_nos))
    await write_group_events(db, encoder, batch_uid, reports)
