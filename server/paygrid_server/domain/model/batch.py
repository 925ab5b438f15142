"""Batch entities: a batch, its items and its groups."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable

from paygrid_server.domain.model.control_totals import ControlTotals
from paygrid_server.domain.model.fingerprint import fingerprint as digest_of
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import Failure


class GroupingPolicy(enum.Enum):
    CHANNEL_AND_CURRENCY = "CHANNEL_AND_CURRENCY"
    CHANNEL = "CHANNEL"
    CHANNEL_CURRENCY_AND_PAYEE = "CHANNEL_CURRENCY_AND_PAYEE"


class FailurePolicy(enum.Enum):
    """What an item that fails does to the rest of its batch."""
    CONTINUE = "CONTINUE"
    STOP_ON_FIRST_FAILURE = "STOP_ON_FIRST_FAILURE"
    ALL_OR_NOTHING_PER_GROUP = "ALL_OR_NOTHING_PER_GROUP"


class BatchStatus(enum.Enum):
    RECEIVING = "RECEIVING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    INTERRUPTED = "INTERRUPTED"
    REJECTED = "REJECTED"  # its control totals did not match; nothing was charged


class BatchItemStatus(enum.Enum):
    RECEIVED = "RECEIVED"
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_final(self) -> bool:
        return self in FINAL_ITEM_STATUSES


# A tuple: `in` and list.count compare by identity first, in C, where the
# class attributes read in is_final and an Enum's hash (Python code) cost
# 0.1-0.3 µs, per item of every group.
FINAL_ITEM_STATUSES = (BatchItemStatus.SUCCEEDED, BatchItemStatus.FAILED,
                       BatchItemStatus.REJECTED)


def final_counts(items: Iterable[BatchItem | ItemResult]) -> dict[BatchItemStatus, int]:
    """How many of `items` hold each final status (those none hold left out)."""
    statuses = [item.status for item in items]
    return {status: count for status in FINAL_ITEM_STATUSES
            if (count := statuses.count(status))}


@dataclass(frozen=True, slots=True)
class BatchHeader:
    batch_id: str
    payer: str
    grouping: GroupingPolicy
    max_group_size: int
    parallelism: int
    control: ControlTotals | None = None  # declared by the client, checked per stream
    failure_policy: FailurePolicy = FailurePolicy.CONTINUE

    def fingerprint(self) -> str:
        """What makes a batch the same batch on resubmission. Group size and
        parallelism are how to run it, not what it is, so they may change.
        Declared control totals describe its content, so they may not."""
        parts = [self.payer, self.grouping.value]
        if self.failure_policy is not FailurePolicy.CONTINUE:  # older batches' digests stand
            parts.append(self.failure_policy.value)
        if self.control is not None:
            total = self.control.amount_sum
            parts += [self.control.item_count,
                      None if total is None else format(total.normalize(), "f")]
        return digest_of(parts)


@dataclass(slots=True)
class Batch:
    tenant_id: str  # the owner: only its API keys see the batch
    batch_id: str  # the client's, unique per tenant
    uid: str  # server-made, unique forever: the root of channel idempotency keys
    header: BatchHeader
    fingerprint: str
    status: BatchStatus
    submissions: int
    created_at_us: int
    completed_at_us: int | None = None
    wall_us_before: int = 0  # wall time of earlier submissions
    submission_started_at_us: int = 0
    # The aggregate_version of the batch's last event (0 before it is stored).
    version: int = 0


@dataclass(slots=True)
class BatchItem:
    seq: int  # arrival order in the batch, from 1
    reference: str
    payee: str
    amount: Money
    requested_channel: str
    requested_at_us: int | None
    channel: str  # where it is (or would be) charged
    status: BatchItemStatus = BatchItemStatus.RECEIVED
    attempt: int = 1
    group_no: int = 0
    channel_reference: str = ""
    failure: Failure | None = None
    # The batch's aggregate_version of the event that last reported the item
    # (0: none yet; storage/batch_group_events.py).
    version: int = 0

    def content(self) -> tuple[str, Money, str, int | None]:
        """What an item resent on resubmission must carry as it was first
        sent. Where it is charged is not content: routing may differ."""
        return self.payee, self.amount, self.requested_channel, self.requested_at_us

    def result(self) -> ItemResult:
        return ItemResult(self.reference, self.status, self.channel, self.channel_reference,
                          self.failure, self.group_no)

    def channel_key(self, batch_uid: str) -> str:
        return channel_keys(batch_uid, [self])[0]


def channel_keys(batch_uid: str, items: list[BatchItem]) -> list[str]:
    """Each item's idempotency key at its channel, in one comprehension (a
    group's hundred keys per ChargeBatch); the one place the key is spelled,
    so a bulk charge and a charge of one item can never name an item twice.
    A new attempt (after a fenced interrupted one) gets a new key, so at
    most one key per item can ever be captured."""
    return [f"{batch_uid}.{item.seq}.{item.attempt}" for item in items]


@dataclass(slots=True)
class BatchGroup:
    group_no: int
    key: str
    items: list[BatchItem] = field(default_factory=list)
    started_at_us: int = 0
    completed_at_us: int = 0
    # The group's result as this process stored it in its event
    # (SnapshotEncoder.group: type name and bytes), set by the store inside
    # the transaction that stores the results; SubmitBatch streams those bytes
    # rather than encode the group a second time. A group is not changed after
    # its results are stored; one read back from storage has none.
    stored_snapshot: tuple[str, bytes] | None = field(default=None, compare=False, repr=False)

    @property
    def processing_us(self) -> int:
        return self.completed_at_us - self.started_at_us


@dataclass(frozen=True, slots=True)
class BatchCounts:
    total: int
    succeeded: int
    failed: int
    rejected: int
    pending: int


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What the client is told about one item."""

    reference: str
    status: BatchItemStatus
    channel: str = ""
    channel_reference: str = ""
    failure: Failure | None = None
    group_no: int = 0
