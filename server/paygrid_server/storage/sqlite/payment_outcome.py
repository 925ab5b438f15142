"""A payment's outcome written in the SQLite writer's turn, and the state
before it that decides its events (storage/event_rows.py).

Why a path without reading that state: every statement a unit runs costs
the writer thread its module overhead and a GIL hand-over (docs/performance.md,
"Pay's SQLite writer"), and a Pay's outcome usually follows this store's own
insert of it, whose state is known: version 1, PROCESSING, every leg PENDING
with nothing refunded. So the outcome updates the payment row first, with a
guard that checks exactly that state (the one statement reads what the
SELECT would have); when another writer changed the payment since (another
worker on the file, its recovery, a refund), the guard matches no row,
nothing is written, and the outcome reads the state as before. Same rows,
same events, same bytes either way.
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
# The payment still as inserted (InsertedPayments), or no row is updated.
_UPDATE_PAYMENT_AS_INSERTED = (
    f"{_UPDATE_PAYMENT} AND version = 1 AND status = 'PROCESSING' AND NOT EXISTS ("
    "SELECT 1 FROM payment_legs WHERE payment_id = payments.payment_id AND "
    "(status != 'PENDING' OR refunded_minor != 0 OR refund_pending_minor != 0))")
_LEG_AS_INSERTED = {"status": "PENDING", "refunded_minor": 0, "refund_pending_minor": 0}

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
    """Ids of payments this store inserted, until their first outcome.
    Bounded: the oldest is forgotten first (its outcome then reads the
    state). Used on the writer thread only (in its units), so no lock; a
    unit that runs twice (writer.py) remembers again, or finds nothing the
    second time and reads."""

    def __init__(self, max_remembered: int = MAX_REMEMBERED) -> None:
        self._max = max_remembered
        self._ids: dict[str, None] = {}  # insertion order: oldest first

    def __len__(self) -> int:
        return len(self._ids)

    def remember(self, payment_id: str) -> None:
        if len(self._ids) >= self._max:
            del self._ids[next(iter(self._ids))]
        self._ids[payment_id] = None

    def take(self, payment_id: str) -> bool:
        return self._ids.pop(payment_id, False) is None


def write_payment_outcome(db: sqlite3.Connection, encoder: SnapshotEncoder, payment: Payment,
                          inserted_here: bool) -> int | None:
    """Stores `payment`'s outcome with its events; returns its version after
    them, or None when it was final already (the first final outcome
    stands: another worker's, say). inserted_here: this store inserted it
    and has not saved an outcome for it since (InsertedPayments.take)."""
    if inserted_here:
        as_inserted = StateBefore(PaymentStatus.PROCESSING.value, 1,
                                  {leg.index: _LEG_AS_INSERTED for leg in payment.legs})
        version = _write(db, encoder, payment, as_inserted, guarded=True)
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
    """guarded: the payment row is updated first, only if the payment is
    still as inserted (before is that state); None (nothing written) if not."""
    after = payment_after_outcome(payment, before.legs, before.version)
    types = payment_outcome_types(
        before.status, {i: leg["status"] for i, leg in before.legs.items()}, after)
    version = before.version + len(types)
    if guarded:
        if db.execute(_UPDATE_PAYMENT_AS_INSERTED,
                      (version, *payment_outcome_row(payment))).rowcount != 1:
            return None
    write_payment_events(db, encoder, types, after, before.version)
    db.executemany(_UPDATE_LEGS, leg_outcome_rows(payment))
    if not guarded:
        db.execute(_UPDATE_PAYMENT, (version, *payment_outcome_row(payment)))
    return version
