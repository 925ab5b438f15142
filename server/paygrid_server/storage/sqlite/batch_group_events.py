"""The events of a batch group's results on SQLite, written inside the
writer's transaction that stores them (storage/batch_group_events.py says
which). One writer: nothing changes the batch between reading its version
and writing the next."""

from __future__ import annotations

import sqlite3

from paygrid_server.domain.model.batch import BatchItem
from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.storage.batch_group_events import GroupEvents, GroupReport, ItemChanges
from paygrid_server.storage.event_rows import EVENT_COLUMNS
from paygrid_server.storage.sqlite.batch_item_rows import (
    groups_as_stored,
    save_states,
    stored_statuses,
)

_INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def write_group_events(db: sqlite3.Connection, encoder: SnapshotEncoder, batch_uid: str,
                       reports: list[GroupReport]) -> None:
    """Writes the reports' events and sets each reported item's version:
    the caller stores the items after this."""
    events = GroupEvents(reports, encoder)
    tenant_id, batch_id, version = db.execute(
        "SELECT tenant_id, batch_id, version FROM batches WHERE uid = ?", (batch_uid,)).fetchone()
    db.executemany(_INSERT_EVENT, events.rows(tenant_id, batch_id, version))
    db.execute("UPDATE batches SET version = ? WHERE uid = ?", (version + events.count, batch_uid))


def save_and_report(db: sqlite3.Connection, encoder: SnapshotEncoder, batch_uid: str,
                    items: list[BatchItem]) -> None:
    """Items saved outside a group's completion: the groups of those that
    changed into a reported status are reported again, as stored."""
    status_before = stored_statuses(db, batch_uid, items)
    save_states(db, batch_uid, items)
    changes = ItemChanges.of(items, status_before)
    if not changes.seqs:
        return
    reports = changes.reports(groups_as_stored(db, batch_uid, changes.group_nos))
    write_group_events(db, encoder, batch_uid, reports)
    save_states(db, batch_uid, [item for report in reports for item in report.group.items])
