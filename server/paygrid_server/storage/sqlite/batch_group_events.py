"""The events of a batch group's results on SQLite, written inside the
writer's transaction that stores them (storage/batch_group_events.py says
which). One writer: nothing changes the batch between reading its version
and writing the next."""

from __future__ import annotations

import sqlite3

from paygrid_server.domain.model.batch import BatchItem
from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.storage.batch_group_events import (
    GroupReport,
    changed,
    changed_items,
    event_count,
    group_event_rows,
    group_payloads,
    groups_of,
    reported_items,
)
from paygrid_server.storage.event_rows import EVENT_COLUMNS
from paygrid_server.storage.sqlite.batch_item_rows import groups_as_stored, save_states

_INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def write_group_events(db: sqlite3.Connection, encoder: SnapshotEncoder, batch_uid: str,
                       reports: list[GroupReport]) -> None:
    """Writes the reports' events and sets each reported item's version:
    the caller stores the items after this."""
    tenant_id, batch_id, version = db.execute(
        "SELECT tenant_id, batch_id, version FROM batches WHERE uid = ?", (batch_uid,)).fetchone()
    db.executemany(_INSERT_EVENT, group_event_rows(
        reports, group_payloads(reports, encoder), tenant_id, batch_id, version, encoder))
    db.execute("UPDATE batches SET version = ? WHERE uid = ?",
               (version + event_count(reports), batch_uid))


def report_changes(db: sqlite3.Connection, encoder: SnapshotEncoder, batch_uid: str,
                   items: list[BatchItem], status_before: dict[int, str]) -> None:
    """After `items` were saved over `status_before`: the groups of those
    that changed into a reported status are reported again, as stored."""
    seqs = changed_items(items, status_before)
    if not seqs:
        return
    reports = [changed(group, seqs)
               for group in groups_as_stored(db, batch_uid, groups_of(items, seqs))]
    write_group_events(db, encoder, batch_uid, reports)
    save_states(db, batch_uid, reported_items(reports))  # their versions
