"""An event: one state change of one aggregate, as the event log stores it."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EventType(enum.Enum):
    """Every type the log writes (CloudEvents `type`: io.paygrid.<name>.v1)."""

    PAYMENT_CREATED = "payment.created"
    PAYMENT_LEG_SUCCEEDED = "payment.leg.succeeded"
    PAYMENT_LEG_FAILED = "payment.leg.failed"
    PAYMENT_LEG_UNKNOWN = "payment.leg.unknown"
    PAYMENT_LEG_VOIDED = "payment.leg.voided"
    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_PARTIALLY_SUCCEEDED = "payment.partially_succeeded"
    PAYMENT_FAILED = "payment.failed"
    REFUND_CREATED = "payment.refund.created"
    REFUND_SUCCEEDED = "payment.refund.succeeded"
    REFUND_PARTIALLY_SUCCEEDED = "payment.refund.partially_succeeded"
    REFUND_FAILED = "payment.refund.failed"
    BATCH_CREATED = "batch.created"
    BATCH_RESUMED = "batch.resumed"  # submitted again after it stopped
    BATCH_COMPLETED = "batch.completed"
    BATCH_INTERRUPTED = "batch.interrupted"
    BATCH_REJECTED = "batch.rejected"  # control totals did not match; nothing charged
    # A group's results, every item's (successes are told only here); then,
    # one by one, the items that need a look: failed, or outcome unknown.
    BATCH_GROUP_COMPLETED = "batch.group.completed"
    BATCH_ITEM_FAILED = "batch.item.failed"
    BATCH_ITEM_UNKNOWN = "batch.item.unknown"

    @property
    def cloud_type(self) -> str:
        return f"io.paygrid.{self.value}.v1"


# Refunds are part of their payment's aggregate: one version sequence, so
# "in order per payment" covers them.
PAYMENT_AGGREGATE = "payment"
# A batch's aggregate_id is its batch_id: unique per tenant, as event
# versions are (the log's key is tenant, aggregate type, id, version).
BATCH_AGGREGATE = "batch"


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    event_id: str
    type: str  # the CloudEvents type, io.paygrid.<name>.v1
    tenant_id: str
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    payload_type: str  # the protobuf full name of the payload, e.g. paygrid.v1.Payment
    payload: bytes  # the serialized snapshot after the change
    occurred_at_us: int


class StartPosition(enum.Enum):
    """Where a watch starts when not after a cursor it names."""

    AFTER_CURSOR = "AFTER_CURSOR"  # after_cursor decides (0: the beginning)
    EARLIEST = "EARLIEST"  # the oldest event retention kept
    LATEST = "LATEST"  # only events committed after the call


# google.rpc.ErrorInfo reasons of OUT_OF_RANGE positions.
CURSOR_EXPIRED = "EVENT_CURSOR_EXPIRED"  # below what retention kept
CURSOR_AHEAD = "EVENT_CURSOR_AHEAD"  # past the log's end


@dataclass(frozen=True, slots=True)
class WatchFrame:
    """One frame of a watch: an event, or (event None) a keep-alive."""

    cursor: int
    event: Event | None


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[Event]
    next_cursor: int
