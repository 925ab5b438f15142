"""The events of a batch group's results on PostgreSQL, written inside the
transaction that stores them (storage/batch_group_events.py says which):
under the group queue's fence, so a replica whose lease was lost writes
neither results nor events.

Versions are taken late: UPDATE batches ... RETURNING version locks the
batch row for the transaction's tail only (the items' one UPDATE, with
their versions, the events, the commit), so groups of one batch saved in
parallel wait for each other there, not for their fences or payloads.
Taking it after the items' UPDATE would hold the lock as long (the items
would need a second UPDATE for their versions) and write every item twice.
Lock order, the same for every writer: group row (the fence), item rows,
then the batch row. The batch's status events lock the batch row alone
(lock_batch) and only read items and groups; ingest (insert_items) takes
its per-batch lock apart (an advisory lock) and the batch row after its
item rows: no writer waits for an item row while holding the batch row.
"""

from __future__ import annotations

import asyncpg

from paygrid_server.domain.model.batch import BatchItem
from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.storage.batch_group_events import GroupEvents, GroupReport, ItemChanges
from paygrid_server.storage.event_rows import EVENT_COLUMNS
from paygrid_server.storage.postgres.batch_sql import (
    groups_as_stored,
    save_states,
    stored_statuses,
)
from paygrid_server.storage.postgres.payment_events import notify_watchers

_INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"


async def write_group_events(db: asyncpg.Connection, encoder: SnapshotEncoder, batch_uid: str,
                             reports: list[GroupReport], stops_batch: str | None = None) -> None:
    """The reports' events, and every reported item saved (its state and its
    version); with `stops_batch`, the batch is stopped in the same statement
    that takes the versions (its row is locked once, late)."""
    events = GroupEvents(reports, encoder)
    batch = await db.fetchrow(
        "UPDATE batches SET version = version + $2, stopped_after = coalesce(stopped_after, $3) "
        "WHERE uid = $1 RETURNING tenant_id, batch_id, version",
        batch_uid, events.count, stops_batch)
    await db.executemany(_INSERT_EVENT, events.rows(batch["tenant_id"], batch["batch_id"],
                                                    batch["version"] - events.count))
    await save_states(db, batch_uid, events.items)
    await notify_watchers(db)


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
