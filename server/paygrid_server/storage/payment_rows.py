"""Payment, leg and refund rows as domain objects, the same for every engine (rows
are read by column name: sqlite3.Row, aiosqlite.Row and asyncpg.Record all
allow it)."""

from __future__ import annotations

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
from paygrid_server.storage.failure_columns import failure_from_columns

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
