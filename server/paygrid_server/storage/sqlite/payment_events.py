"""The events of a payment's state changes, written by SqlitePaymentStore
inside the writer's transaction that makes the change (storage/event_rows.py
says which events and how versions go). SQLite has one writer: nothing else
can change the payment between reading its version and writing the next."""

from __future__ import annotations

import sqlite3

from paygrid_server.domain.model.event import EventType
from paygrid_server.domain.model.payment import Payment
from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.storage.event_rows import EVENT_COLUMNS, payment_event_rows, refund_event_row
from paygrid_server.storage.payment_rows import refund_from_rows

_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES {_ROW}"


def _insert_events(count: int) -> str:
    """One INSERT for `count` events: executemany steps once per row (and
    releases the GIL each time, which a workers' writer thread then waits to
    win back from the event loop); a multi-row VALUES steps once. SQLite inserts the
    rows in the order given, so their seq keeps the versions' order."""
    return f"INSERT INTO events ({EVENT_COLUMNS}) VALUES {', '.join([_ROW] * count)}"


def write_payment_events(db: sqlite3.Connection, encoder: SnapshotEncoder,
                         types: list[EventType], after: Payment, version_before: int) -> int:
    """Writes the events with `after`, the payment as its rows are in this
    transaction after the change; returns its version after them, which the
    caller stores in payments.version in this transaction, with the
    statement that makes the change (one statement fewer than a separate
    UPDATE of the version)."""
    if not types:
        return version_before
    rows = payment_event_rows(types, after, version_before, encoder)
    db.execute(_insert_events(len(rows)), [value for row in rows for value in row])
    return after.version


def write_refund_event(db: sqlite3.Connection, encoder: SnapshotEncoder,
                       event_type: EventType, refund_id: str) -> None:
    row = db.execute("SELECT * FROM refunds WHERE refund_id = ?", (refund_id,)).fetchone()
    refund = refund_from_rows(row, db.execute(
        "SELECT * FROM refund_legs WHERE refund_id = ? ORDER BY leg_index", (refund_id,)))
    owner = db.execute("SELECT tenant_id, version FROM payments WHERE payment_id = ?",
                       (refund.payment_id,)).fetchone()
    version = owner["version"] + 1
    db.execute(_INSERT_EVENT, refund_event_row(event_type, owner["tenant_id"], refund, version,
                                               encoder))
    db.execute("UPDATE payments SET version = ? WHERE payment_id = ?",
               (version, refund.payment_id))
