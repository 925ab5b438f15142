"""A payment's outcome written in the SQLite writer's turn, and the state
before it that decides its events (storage/event_rows.py).

Why a path without reading that state: every statement a unit runs hands
the GIL over and makes the writer wait to win it back from the busy event
loop (docs/performance.md, "Pay latency at half of peak"), and a Pay's
outcome usually follows this process's own insert of it, which knows the
state exactly: version 1 and its legs as inserted. So the outcome updates
the payment row first, guarded by that version; every change to a payment
or its legs' statuses and refund columns writes an event and so moves the
version (a refund's reservation too: write_refund_event), whoever writes
it (another worker on the file, its recovery), so a row still at the
version has the state remembered. The guard failing (no row at that
version) means the payment changed: the outcome reads the state as before.
Same rows, same events, same bytes either way.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Mapping

from paygrid_server.domain.model.payment import Payment, PaymentStatus
from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.storage.event_rows import payment_outcome_types
from paygrid_server.storage.payment_rows import (
    leg_outcome_rows,
    payment_after_outcome,
    payment_outcome_row,
)
from paygrid_server.storage.sqlite.payment_events import write_payment_events

# One statement for the payment's and its legs' state before: a payment has
# at least one leg, so every row carries the payment's.
_BEFORE_OUTCOME = (
    "SELECT p.status AS payment_status, p.version, l.leg_index, l.status, l.refunded_minor, "
    "l.refund_pending_minor FROM payments p JOIN payment_legs l USING (payment_id) "
    "WHERE p.payment_id = ?")
_UPDATE_LEGS = (
    "UPDATE payment_legs SET status = ?, channel = ?, channel_reference = ?, "
    "failure_reason = ?, failure_message = ?, failure_decline_code = ?, "
    "attempts = ?, latency_us = ? WHERE payment_id = ? AND leg_index = ?")
_UPDATE_PAYMENT = (
    "UPDATE payments SET version = ?, status = ?, failure_reason = ?, "
    "failure_message = ?, failure_decline_code = ?, completed_at_us = ? "
    "WHERE payment_id = ?")
_UPDATE_PAYMENT_AT_VERSION = f"{_UPDATE_PAYMENT} AND version = ?"

# Payments inserted and not yet given an outcome at once: Pays waiting
# (max_concurrent_calls) and accepted ones still charging.
MAX_REMEMBERED = 4096


@dataclass(frozen=True, slots=True)
class StateBefore:
    """What an outcome's events are decided from: the payment's status and
    version, and by leg_index each leg's status and refund columns (rows of
    _BEFORE_OUTCOME, or the same keys)."""
    status: str
    version: int
    legs: Mapping[int, Mapping[str, Any]]


class InsertedPayments:
    """The state of payments this store inserted, as the insert wrote it,
    until their first outcome. Bounded: the oldest is forgotten first (its
    outcome then reads the state). Used on the writer thread only (its
    units), so no lock: a unit that runs twice (writer.py) remembers again,
    or finds nothing the second time and reads."""

    def __init__(self, max_remembered: int = MAX_REMEMBERED) -> None:
        self._max = max_remembered
        self._states: dict[str, StateBefore] = {}  # insertion order: oldest first

    def __len__(self) -> int:
        return len(self._states)

    def remember(self, payment: Payment, version: int) -> None:
        if len(self._states) >= self._max:
            del self._states[next(iter(self._states))]
        self._states[payment.payment_id] = StateBefore(
            payment.status.value, version,
            {leg.index: {"status": leg.status.value, "refunded_minor": leg.refunded_minor,
                         "refund_pending_minor": leg.refund_pending_minor}
             for leg in payment.legs})

    def take(self, payment_id: str) -> StateBefore | None:
        return self._states.pop(payment_id, None)


def write_payment_outcome(db: sqlite3.Connection, encoder: SnapshotEncoder, payment: Payment,
                          remembered: StateBefore | None) -> int | None:
    """Stores `payment`'s outcome with its events; returns its version after
    them, or None when it was final already (the first final outcome
    stands: another worker's, say)."""
    if remembered is not None and not PaymentStatus(remembered.status).is_final:
        version = _write(db, encoder, payment, remembered, guarded=True)
        if version is not None:
            return version
    legs = {row["leg_index"]: row for row in db.execute(_BEFORE_OUTCOME, (payment.payment_id,))}
    first = next(iter(legs.values()))
    before = StateBefore(first["payment_status"], first["version"], legs)
    if PaymentStatus(before.status).is_final:
        return None
    return _write(db, encoder, payment, before, guarded=False)


def _write(db: sqlite3.Connection, encoder: SnapshotEncoder, payment: Payment,
           before: StateBefore, guarded: bool) -> int | None:
    """guarded: the payment row is updated first, only if still at
    before.version; None (nothing written) if it is not."""
    after = payment_after_outcome(payment, before.legs, before.version)
    types = payment_outcome_types(
        before.status, {i: leg["status"] for i, leg in before.legs.items()}, after)
    version = before.version + len(types)
    if guarded:
        if db.execute(_UPDATE_PAYMENT_AT_VERSION,
                      (version, *payment_outcome_row(payment), before.version)).rowcount != 1:
            return None
    write_payment_events(db, encoder, types, after, before.version)
    db.executemany(_UPDATE_LEGS, leg_outcome_rows(payment))
    if not guarded:
        db.execute(_UPDATE_PAYMENT, (version, *payment_outcome_row(payment)))
    return version
