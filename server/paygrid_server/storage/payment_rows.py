"""Payments, legs and refunds <-> rows, both directions, the same for every
engine (rows are read by column name: sqlite3.Row, aiosqlite.Row and
asyncpg.Record all allow it; written as tuples in the order the stores'
statements name their columns)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Mapping

from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import (
    Leg,
    LegRequest,
    LegStatus,
    Payment,
    PaymentMode,
    PaymentStatus,
)
from paygrid_server.domain.model.refund import Refund, RefundLeg, RefundStatus
from paygrid_server.storage.failure_columns import failure_columns, failure_from_columns

Row = Mapping[str, Any]


def leg_from_row(row: Row) -> Leg:
    return Leg(
        index=row["leg_index"],
        request=LegRequest(row["payee"], Money(row["currency"], row["amount_minor"]),
                           row["requested_channel"], row["reference"]),
        status=LegStatus(row["status"]),
        channel=row["channel"],
        channel_reference=row["channel_reference"],
        failure=failure_from_columns(row["failure_reason"], row["failure_message"],
                                     row["failure_decline_code"]),
        attempts=row["attempts"],
        latency_us=row["latency_us"],
        refunded_minor=row["refunded_minor"],
        refund_pending_minor=row["refund_pending_minor"],
    )


def payment_from_row(row: Row, legs: list[Leg]) -> Payment:
    return Payment(
        payment_id=row["payment_id"],
        tenant_id=row["tenant_id"],
        idempotency_key=row["idempotency_key"],
        fingerprint=row["fingerprint"],
        payer=row["payer"],
        mode=PaymentMode(row["mode"]),
        legs=legs,
        metadata=json.loads(row["metadata_json"]),
        received_at_us=row["received_at_us"],
        status=PaymentStatus(row["status"]),
        failure=failure_from_columns(row["failure_reason"], row["failure_message"],
                                     row["failure_decline_code"]),
        completed_at_us=row["completed_at_us"],
        version=row["version"],
    )


def refund_from_rows(row: Row, leg_rows: Iterable[Row]) -> Refund:
    legs = [RefundLeg(
        leg_index=leg["leg_index"], amount=Money(leg["currency"], leg["amount_minor"]),
        channel=leg["channel"], status=RefundStatus(leg["status"]),
        channel_reference=leg["channel_reference"],
        failure=failure_from_columns(leg["failure_reason"], leg["failure_message"], None),
    ) for leg in leg_rows]
    return Refund(
        refund_id=row["refund_id"], payment_id=row["payment_id"],
        idempotency_key=row["idempotency_key"], fingerprint=row["fingerprint"],
        reason=row["reason"], legs=legs, created_at_us=row["created_at_us"],
        status=RefundStatus(row["status"]))


# The state an outcome is decided on, in one statement (each is a round
# trip, or on SQLite a GIL hand-over): the payment's status and version on
# every leg's row (a payment has at least one leg), and the legs' status
# and refund columns, the only ones an outcome's UPDATEs (leg_outcome_rows,
# payment_outcome_row) leave as they are. `{}`: the payment_id's parameter.
BEFORE_OUTCOME_SQL = (
    "SELECT p.status AS payment_status, p.version, l.leg_index, l.status, l.refunded_minor, "
    "l.refund_pending_minor FROM payments p JOIN payment_legs l USING (payment_id) "
    "WHERE p.payment_id = {}")


def payment_after_outcome(payment: Payment, legs_before: Mapping[int, Row],
                          version: int) -> Payment:
    """The payment as its rows are after the outcome's UPDATEs in the same
    transaction, without reading them back: those UPDATEs write every column
    an outcome changes from `payment` itself, the other columns were fixed
    at insert, but for each leg's refund columns, taken from `legs_before`
    (BEFORE_OUTCOME_SQL's rows by leg_index, read in this transaction)
    and the version. A copy: `payment` is left as it is should the
    transaction not commit."""
    return dataclasses.replace(payment, legs=[_leg_as_stored(leg, legs_before[leg.index])
                                              for leg in payment.legs], version=version)


def _leg_as_stored(leg: Leg, before: Row) -> Leg:
    """`leg` itself when its refund columns are as stored (so unless a refund
    was taken since the payment was loaded): a copy costs 1.4 us a leg inside
    the writer's turn, and nothing changes the copy's legs (only its version
    is set)."""
    refunded, pending = before["refunded_minor"], before["refund_pending_minor"]
    if leg.refunded_minor == refunded and leg.refund_pending_minor == pending:
        return leg
    return dataclasses.replace(leg, refunded_minor=refunded, refund_pending_minor=pending)


# -- objects -> rows (column orders as the stores' INSERT and UPDATE name them)

def metadata_json(metadata: Mapping[str, str]) -> str:
    # Most payments carry none: json.dumps of {} is 1.3 us of the writer's turn.
    return json.dumps(metadata, sort_keys=True) if metadata else "{}"


def payment_row(payment: Payment) -> tuple:
    """payment_id, tenant_id, idempotency_key, fingerprint, payer, mode,
    status, metadata_json, received_at_us."""
    return (payment.payment_id, payment.tenant_id, payment.idempotency_key, payment.fingerprint,
            payment.payer, payment.mode.value, payment.status.value,
            metadata_json(payment.metadata), payment.received_at_us)


def leg_rows(payment: Payment) -> list[tuple]:
    """payment_id, leg_index, payee, currency, amount_minor, requested_channel,
    reference, status, channel, channel_reference, attempts, latency_us."""
    return [(payment.payment_id, leg.index, leg.request.payee, leg.request.amount.currency,
             leg.request.amount.amount_minor, leg.request.channel, leg.request.reference,
             leg.status.value, leg.channel, leg.channel_reference, leg.attempts, leg.latency_us)
            for leg in payment.legs]


def first_attempt_rows(payment: Payment) -> list[tuple]:
    """payment_id, leg_index, channel, started_at_us: where each leg may be
    charged first, stored before any channel call."""
    return [(payment.payment_id, leg.index, leg.first_channel, payment.received_at_us)
            for leg in payment.legs if leg.first_channel]


def leg_outcome_rows(payment: Payment) -> list[tuple]:
    """status, channel, channel_reference, failure_reason, failure_message,
    failure_decline_code, attempts, latency_us, then the key: payment_id, leg_index."""
    return [(leg.status.value, leg.channel, leg.channel_reference, *failure_columns(leg.failure),
             leg.attempts, leg.latency_us, payment.payment_id, leg.index)
            for leg in payment.legs]


def payment_outcome_row(payment: Payment) -> tuple:
    """status, failure_reason, failure_message, failure_decline_code,
    completed_at_us, then the key: payment_id."""
    return (payment.status.value, *failure_columns(payment.failure), payment.completed_at_us,
            payment.payment_id)


def refund_row(refund: Refund) -> tuple:
    """refund_id, payment_id, idempotency_key, fingerprint, reason, status, created_at_us."""
    return (refund.refund_id, refund.payment_id, refund.idempotency_key, refund.fingerprint,
            refund.reason, refund.status.value, refund.created_at_us)


def refund_leg_row(refund: Refund, leg: RefundLeg) -> tuple:
    """refund_id, leg_index, currency, amount_minor, channel, status, channel_reference."""
    return (refund.refund_id, leg.leg_index, leg.amount.currency, leg.amount.amount_minor,
            leg.channel, leg.status.value, leg.channel_reference)
