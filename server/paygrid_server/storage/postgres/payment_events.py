"""The locks a payment's changes take first, and its refunds' events,
written by PostgresPaymentStore inside the transaction that makes the
change (storage/event_rows.py says which events and how versions go; a
payment's own insert and outcome write theirs in their one statement:
postgres/payment_statements.py). Every write here expects the
payment's row locked by lock_payment first: versions are read, then written,
and two replicas must not interleave there. Locking the payment row before
any leg row also keeps one lock order for every writer (no deadlocks)."""

from __future__ import annotations

import asyncpg

from paygrid_server.domain.model.event import EventType
from paygrid_server.domain.model.refund import Refund
from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.storage.event_rows import EVENT_COLUMNS, refund_event_row
from paygrid_server.storage.payment_rows import BEFORE_OUTCOME_SQL, refund_from_rows

_INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"


# LISTEN/NOTIFY channel: only a wake-up for watchers of every replica (they
# read the table for what changed); delivered when the transaction commits,
# never for one that rolls back.
EVENTS_CHANNEL = "paygrid_events"

_LOCK_BEFORE_OUTCOME = BEFORE_OUTCOME_SQL.format("$1") + " FOR UPDATE OF p"


async def notify_watchers(db: asyncpg.Connection) -> None:
    await db.execute("SELECT pg_notify($1, '')", EVENTS_CHANNEL)


async def lock_payment(db: asyncpg.Connection, payment_id: str) -> asyncpg.Record:
    """The payment's status, tenant_id and version, its row locked until commit."""
    return await db.fetchrow(
        "SELECT status, tenant_id, version FROM payments WHERE payment_id = $1 FOR UPDATE",
        payment_id)


async def lock_before_outcome(db: asyncpg.Connection, payment_id: str) -> list[asyncpg.Record]:
    """lock_payment and BEFORE_OUTCOME_SQL's rows (event_rows.payment_outcome_change)
    in one statement."""
    return await db.fetch(_LOCK_BEFORE_OUTCOME, payment_id)


async def write_refund_event(db: asyncpg.Connection, encoder: SnapshotEncoder,
                             event_type: EventType, refund_id: str, owner: asyncpg.Record) -> None:
    """`owner` is the payment's lock_payment row, taken in this transaction."""
    row = await db.fetchrow("SELECT * FROM refunds WHERE refund_id = $1", refund_id)
    refund: Refund = refund_from_rows(row, await db.fetch(
        "SELECT * FROM refund_legs WHERE refund_id = $1 ORDER BY leg_index", refund_id))
    version = owner["version"] + 1
    await db.execute(_INSERT_EVENT, *refund_event_row(event_type, owner["tenant_id"], refund,
                                                      version, encoder))
    await notify_watchers(db)
    await db.execute("UPDATE payments SET version = $1 WHERE payment_id = $2",
                     version, refund.payment_id)
