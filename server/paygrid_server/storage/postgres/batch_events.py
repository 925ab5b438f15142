"""The events of a batch's status changes, written by PostgresBatchStore
inside the transaction that makes the change (storage/event_rows.py says
which). The batch row is locked (lock_batch) before its status is read:
versions are read, then written, and replicas must not interleave there."""

from __future__ import annotations

import asyncpg

from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.storage.batch_rows import batch_from_row
from paygrid_server.storage.event_rows import (
    EVENT_COLUMNS,
    batch_counts,
    batch_event_row,
    batch_event_type,
)
from paygrid_server.storage.postgres.payment_events import notify_watchers

_INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"


async def lock_batch(db: asyncpg.Connection, batch_uid: str) -> str | None:
    """The batch's status, its row locked until commit."""
    return await db.fetchval("SELECT status FROM batches WHERE uid = $1 FOR UPDATE", batch_uid)


async def write_batch_event(db: asyncpg.Connection, encoder: SnapshotEncoder, batch_uid: str,
                            status_before: str | None) -> None:
    """After the change: the event its status change calls for, if any."""
    after = batch_from_row(await db.fetchrow("SELECT * FROM batches WHERE uid = $1", batch_uid))
    event_type = batch_event_type(status_before, after)
    if event_type is None:
        return
    after.version += 1
    by_status = {row["status"]: row["n"] for row in await db.fetch(
        "SELECT status, count(*) AS n FROM batch_items WHERE batch_uid = $1 GROUP BY status",
        batch_uid)}
    unstored = await db.fetchval("SELECT unstored_rejections FROM batches WHERE uid = $1",
                                 batch_uid)
    group_us = [row[0] for row in await db.fetch(
        "SELECT completed_at_us - started_at_us FROM batch_groups "
        "WHERE batch_uid = $1 AND completed_at_us IS NOT NULL", batch_uid)]
    await db.execute(_INSERT_EVENT, *batch_event_row(
        event_type, after, batch_counts(by_status, unstored), group_us, encoder))
    await db.execute("UPDATE batches SET version = $1 WHERE uid = $2", after.version, batch_uid)
    await notify_watchers(db)
