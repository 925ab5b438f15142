"""A payment's insert, and its outcome's writes, each as one statement
(data-modifying WITHs; rows passed as one array per column, unnest): every
statement is a round trip to PostgreSQL, which costs the event loop more
than the statement costs the database (asyncpg's protocol, a task wake-up).
A Pay's two transactions: BEGIN, this insert, COMMIT; BEGIN, the lock and
the state before (payment_events.lock_before_outcome), this outcome, COMMIT
(docs/performance.md, "PostgreSQL Pay in one statement a write").

Data-modifying WITHs all run, whether the main statement reads them or not,
on one snapshot; the foreign keys are checked at the end of the statement,
when the payment and its legs are both there. Events get their ids (the
BIGSERIAL the sequencer orders by: postgres/event_sequencer.py) in the
order given: versions ascending."""

from __future__ import annotations

from typing import Sequence

from paygrid_server.domain.model.payment import Payment
from paygrid_server.storage.event_rows import EVENT_COLUMNS
from paygrid_server.storage.payment_rows import (
    first_attempt_rows,
    leg_outcome_rows,
    leg_rows,
    payment_outcome_row,
    payment_row,
)
from paygrid_server.storage.postgres.payment_events import EVENTS_CHANNEL

# EVENT_COLUMNS' types, in its order (event_rows.event_row).
_EVENT_TYPES = ("text", "text", "text", "text", "text", "bigint", "text", "bytea", "bigint")
_NOTIFY = f"pg_notify('{EVENTS_CHANNEL}', '')"


def _arrays(first: int, types: Sequence[str]) -> str:
    """$first::types[0][], ...: one parameter per column."""
    return ", ".join(f"${first + n}::{t}[]" for n, t in enumerate(types))


def _events_cte(first: int, gate: str = "") -> str:
    """The events, the arrays from parameter `first` on, in the order given;
    `gate`: a CTE that must hold a row for them to be written."""
    return (f"events AS (INSERT INTO events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} "
            f"FROM {gate + ', ' if gate else ''}unnest({_arrays(first, _EVENT_TYPES)}) "
            f"WITH ORDINALITY AS e({EVENT_COLUMNS}, n) ORDER BY n)")


def _columns(rows: Sequence[tuple], width: int) -> list[list]:
    """The rows' columns, one list each (unnest's arrays); `width`: how
    many when there are no rows."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows)]


# $1-$9: payment_rows.payment_row; $10-$20: leg_rows but their payment_id;
# $21-$22: first_attempt_rows' leg_index and channel; $23-$31: the created
# event's row as arrays. A row back only if this call inserted the payment
# (its idempotency key was free): ON CONFLICT waits for the transaction
# holding the key, and then none of the rest is written.
_INSERT_PAYMENT = (
    "WITH payment AS ("
    "INSERT INTO payments (payment_id, tenant_id, idempotency_key, fingerprint, payer, mode, "
    "status, metadata_json, received_at_us, version) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1) "
    "ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING payment_id), "
    "legs AS (INSERT INTO payment_legs (payment_id, leg_index, payee, currency, amount_minor, "
    "requested_channel, reference, status, channel, channel_reference, attempts, latency_us) "
    "SELECT payment.payment_id, leg.* FROM payment, unnest("
    + _arrays(10, ("int", "text", "text", "bigint", "text", "text", "text", "text", "text",
                   "int", "bigint")) + ") AS leg), "
    # Before any channel call, so recovery knows where each leg may have
    # been charged (domain/ports/payment_store.py).
    "attempts AS (INSERT INTO charge_attempts (payment_id, leg_index, channel, attempt_no, "
    "started_at_us) SELECT payment.payment_id, a.leg_index, a.channel, 1, $9::bigint "
    "FROM payment, unnest($21::int[], $22::text[]) AS a(leg_index, channel)), "
    + _events_cte(23, gate="payment") +
    f" SELECT true FROM payment, {_NOTIFY}")

_LEG_OUTCOME = (
    "legs AS (UPDATE payment_legs SET status = leg.status, channel = leg.channel, "
    "channel_reference = leg.channel_reference, failure_reason = leg.failure_reason, "
    "failure_message = leg.failure_message, failure_decline_code = leg.failure_decline_code, "
    "attempts = leg.attempts, latency_us = leg.latency_us FROM unnest("
    + _arrays(1, ("text", "text", "text", "text", "text", "text", "int", "bigint", "int"))
    + ") AS leg(status, channel, channel_reference, failure_reason, failure_message, "
    "failure_decline_code, attempts, latency_us, leg_index) "
    "WHERE payment_legs.payment_id = $10 AND payment_legs.leg_index = leg.leg_index)")
_PAYMENT_OUTCOME = (
    " UPDATE payments SET status = $11, failure_reason = $12, failure_message = $13, "
    "failure_decline_code = $14, completed_at_us = $15, version = $16 WHERE payment_id = $10")

# $1-$9: payment_rows.leg_outcome_rows' columns but payment_id (leg_index
# last); $10: the payment_id; $11-$15: payment_outcome_row but its
# payment_id; $16: the version after the events; $17-$25 (with events
# only): the events' rows as arrays. The watchers are woken only when
# there are events.
_OUTCOME_WITH_EVENTS = (f"WITH {_LEG_OUTCOME}, {_events_cte(17)}{_PAYMENT_OUTCOME} "
                       f"RETURNING {_NOTIFY}")
_OUTCOME_WITHOUT_EVENTS = f"WITH {_LEG_OUTCOME}{_PAYMENT_OUTCOME}"


def insert_payment(payment: Payment, created: list[tuple]) -> tuple[str, list]:
    """The statement that inserts `payment` with its `created` event's row
    (event_rows.payment_event_rows), and its parameters."""
    legs = _columns(leg_rows(payment), 12)[1:]
    leg_index_and_channel = _columns(first_attempt_rows(payment), 4)[1:3]
    return _INSERT_PAYMENT, [*payment_row(payment), *legs, *leg_index_and_channel,
                             *_columns(created, len(_EVENT_TYPES))]


def save_outcome(payment: Payment, version: int, events: list[tuple]) -> tuple[str, list]:
    """The statement that stores `payment`'s outcome, its version after it
    and its `events`' rows (none: no event, no wake-up), and its parameters."""
    legs = _columns(leg_outcome_rows(payment), 10)
    params = [*legs[:8], legs[9], payment.payment_id, *payment_outcome_row(payment)[:-1],
              version]
    if not events:
        return _OUTCOME_WITHOUT_EVENTS, params
    return _OUTCOME_WITH_EVENTS, [*params, *_columns(events, len(_EVENT_TYPES))]
