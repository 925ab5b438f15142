"""The events of a batch's status changes, written by SqliteBatchStore inside
the writer's transaction that makes the change (storage/event_rows.py says
which). One writer: nothing changes the batch between reading its version
and writing the next."""

from __future__ import annotations

import sqlite3

from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.storage.batch_rows import batch_from_row
from paygrid_server.storage.sqlite import batch_item_counts
from paygrid_server.storage.event_rows import (
    EVENT_COLUMNS,
    batch_counts,
    batch_event_row,
    batch_event_type,
)

_INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def batch_status(db: sqlite3.Connection, batch_uid: str) -> str | None:
    row = db.execute("SELECT status FROM batches WHERE uid = ?", (batch_uid,)).fetchone()
    return row[0] if row else None


def write_batch_event(db: sqlite3.Connection, encoder: SnapshotEncoder, batch_uid: str,
                      status_before: str | None) -> None:
    """After the change: the event its status change calls for, if any."""
    after = batch_from_row(db.execute("SELECT * FROM batches WHERE uid = ?",
                                      (batch_uid,)).fetchone())
    event_type = batch_event_type(status_before, after)
    if event_type is None:
        return
    after.version += 1
    counts = batch_counts(batch_item_counts.by_status(db, batch_uid), db.execute(
        "SELECT unstored_rejections FROM batches WHERE uid = ?", (batch_uid,)).fetchone()[0])
    group_us = [row[0] for row in db.execute(
        "SELECT completed_at_us - started_at_us FROM batch_groups "
        "WHERE batch_uid = ? AND completed_at_us IS NOT NULL", (batch_uid,))]
    db.execute(_INSERT_EVENT, batch_event_row(event_type, after, counts, group_us, encoder))
    db.execute("UPDATE batches SET version = ? WHERE uid = ?", (after.version, batch_uid))
