"""Which events a state change writes, and events <-> rows, the same for
every engine. The stores call these inside the transaction that makes the
change, with the payment or refund as its rows are after it (read back, or
the object the rows were just written from: payment_rows.payment_after_outcome),
so an event's payload is what the database holds, never a stale copy.

Versions: payments.version is the aggregate_version of the payment's last
event. A transaction that writes n events gives them version + 1 .. version + n
and stores version + n, all under the payment row's write lock (SQLite's one
writer; PostgreSQL's SELECT ... FOR UPDATE), so versions have no gaps and no
duplicates whichever replica writes. Refund events share their payment's
versions.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, NamedTuple

from paygrid_server.domain.model import clock
from paygrid_server.domain.model.batch import Batch, BatchCounts, BatchStatus
from paygrid_server.domain.model.event import BATCH_AGGREGATE, PAYMENT_AGGREGATE, Event, EventType
from paygrid_server.domain.model.payment import LegStatus, Payment, PaymentStatus
from paygrid_server.domain.model.refund import Refund, RefundStatus
from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.storage.event_ids import new_event_id
from paygrid_server.storage.payment_rows import payment_after_outcome

Row = Mapping[str, Any]

# Every aggregate type, as an SQL list: a subject filter names them all so
# the (tenant, aggregate type, id, version) index serves it.
AGGREGATE_TYPES = f"('{PAYMENT_AGGREGATE}', '{BATCH_AGGREGATE}')"

# The order of event_row's tuple, as the stores' INSERT names the columns.
EVENT_COLUMNS = ("event_id, type, tenant_id, aggregate_type, aggregate_id, aggregate_version, "
                 "payload_type, payload, occurred_at_us")

_LEG_EVENTS = {
    LegStatus.SUCCEEDED: EventType.PAYMENT_LEG_SUCCEEDED,
    LegStatus.FAILED: EventType.PAYMENT_LEG_FAILED,
    LegStatus.UNKNOWN: EventType.PAYMENT_LEG_UNKNOWN,
    LegStatus.VOIDED: EventType.PAYMENT_LEG_VOIDED,
}
_PAYMENT_EVENTS = {
    PaymentStatus.SUCCEEDED: EventType.PAYMENT_SUCCEEDED,
    PaymentStatus.PARTIALLY_SUCCEEDED: EventType.PAYMENT_PARTIALLY_SUCCEEDED,
    PaymentStatus.FAILED: EventType.PAYMENT_FAILED,
}
_REFUND_EVENTS = {
    RefundStatus.SUCCEEDED: EventType.REFUND_SUCCEEDED,
    RefundStatus.PARTIALLY_SUCCEEDED: EventType.REFUND_PARTIALLY_SUCCEEDED,
    RefundStatus.FAILED: EventType.REFUND_FAILED,
}


def payment_outcome_types(status_before: str, legs_before: Mapping[int, str],
                          after: Payment) -> list[EventType]:
    """One event per leg whose status changed (in leg order), then one for
    the payment when its status changed: a save that changes nothing (a
    retried save, recovery finding the outcome already stored) writes none."""
    types = [_LEG_EVENTS[leg.status] for leg in after.legs
             if leg.status.value != legs_before.get(leg.index) and leg.status in _LEG_EVENTS]
    if after.status.value != status_before and after.status in _PAYMENT_EVENTS:
        types.append(_PAYMENT_EVENTS[after.status])
    return types


class OutcomeChange(NamedTuple):
    """payment_event_rows' first three arguments (and SQLite's
    write_payment_events' after its connection and encoder)."""
    types: list[EventType]  # the events the outcome writes
    after: Payment  # the payment as its rows are once the outcome is written
    version_before: int


def payment_outcome_change(payment: Payment, rows_before: Iterable[Row]) -> OutcomeChange | None:
    """What saving `payment`'s outcome changes, from BEFORE_OUTCOME_SQL's
    rows (payment_rows.py) read in the outcome's transaction, the payment's
    row locked: None when the stored status is final already (the first
    final outcome stands: another worker's or replica's, say)."""
    legs_before = {row["leg_index"]: row for row in rows_before}
    before = next(iter(legs_before.values()))  # a payment has a leg
    if PaymentStatus(before["payment_status"]).is_final:
        return None
    after = payment_after_outcome(payment, legs_before, before["version"])
    types = payment_outcome_types(
        before["payment_status"], {i: row["status"] for i, row in legs_before.items()}, after)
    return OutcomeChange(types, after, before["version"])


def refund_outcome_type(status_before: str, after: Refund) -> EventType | None:
    if after.status.value == status_before:
        return None
    return _REFUND_EVENTS.get(after.status)


def payment_event_rows(types: list[EventType], payment: Payment, version_before: int,
                       encoder: SnapshotEncoder) -> list[tuple]:
    """Rows for `types`, versions from version_before + 1. Each payload is
    the snapshot with its own event's version, so the last one equals what
    GetPayment answers; payment.version ends at the last version."""
    at_us = clock.now_us()
    versions = range(version_before + 1, version_before + len(types) + 1)
    payload_type, payloads = encoder.payment(payment, versions)
    payment.version = versions[-1]
    return [event_row(event_type, payment.tenant_id, payment.payment_id, version, payload_type,
                      payload, at_us)
            for event_type, version, payload in zip(types, versions, payloads)]


def refund_event_row(event_type: EventType, tenant_id: str, refund: Refund, version: int,
                     encoder: SnapshotEncoder) -> tuple:
    payload_type, payload = encoder.refund(refund)
    return event_row(event_type, tenant_id, refund.payment_id, version, payload_type, payload,
                     clock.now_us())


def event_row(event_type: EventType, tenant_id: str, aggregate_id: str, version: int,
              payload_type: str, payload: bytes, at_us: int,
              aggregate_type: str = PAYMENT_AGGREGATE) -> tuple:
    """One event's row, in EVENT_COLUMNS' order."""
    return (new_event_id(), event_type.cloud_type, tenant_id, aggregate_type, aggregate_id,
            version, payload_type, payload, at_us)


_BATCH_EVENTS = {
    BatchStatus.COMPLETED: EventType.BATCH_COMPLETED,
    BatchStatus.INTERRUPTED: EventType.BATCH_INTERRUPTED,
    BatchStatus.REJECTED: EventType.BATCH_REJECTED,
}


def batch_event_type(status_before: str | None, after: Batch) -> EventType | None:
    """None before: the batch was just stored. RECEIVING -> PROCESSING (the
    stream ended, groups still charging) is no event: the batch did not stop
    or start, and its groups' progress is in its counts."""
    if status_before is None:
        return EventType.BATCH_CREATED
    if after.status.value == status_before:
        return None
    if after.status is BatchStatus.RECEIVING:
        return EventType.BATCH_RESUMED
    return _BATCH_EVENTS.get(after.status)


def batch_event_row(event_type: EventType, after: Batch, counts: BatchCounts,
                    group_processing_us: list[int], encoder: SnapshotEncoder) -> tuple:
    """`after` as read in the transaction, its version already the event's."""
    payload_type, payload = encoder.batch(after, counts, group_processing_us)
    return event_row(event_type, after.tenant_id, after.batch_id, after.version, payload_type,
                     payload, clock.now_us(), BATCH_AGGREGATE)


def batch_counts(by_status: dict[str, int], unstored_rejections: int) -> BatchCounts:
    """Counts from item counts by status, as BatchStore.counts gives them."""
    rejected = by_status.get("REJECTED", 0) + unstored_rejections
    succeeded = by_status.get("SUCCEEDED", 0)
    failed = by_status.get("FAILED", 0)
    total = sum(by_status.values()) + unstored_rejections
    return BatchCounts(total, succeeded, failed, rejected, total - succeeded - failed - rejected)


def event_from_row(row: Row) -> Event:
    return Event(seq=row["seq"], event_id=row["event_id"], type=row["type"],
                 tenant_id=row["tenant_id"], aggregate_type=row["aggregate_type"],
                 aggregate_id=row["aggregate_id"], aggregate_version=row["aggregate_version"],
                 payload_type=row["payload_type"], payload=bytes(row["payload"]),
                 occurred_at_us=row["occurred_at_us"])

