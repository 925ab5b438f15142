"""Batch items and batches <-> rows, both directions, the same for every
engine: each store only says how its dialect sends them."""

from __future__ import annotations

from operator import attrgetter
from typing import Any, Callable, Mapping, Sequence

from paygrid_server.domain.model.batch import (
    Batch,
    BatchCounts,
    BatchHeader,
    BatchItem,
    BatchItemStatus,
    BatchStatus,
    FailurePolicy,
    GroupingPolicy,
)
from paygrid_server.domain.model.money import Money
from paygrid_server.storage.failure_columns import failure_columns, failure_from_columns

# The columns an item is first stored with.
STORED_ITEM_COLUMNS = (
    "seq, reference, payee, currency, amount_minor, requested_channel, requested_at_us, "
    "channel, status, attempt, group_no, channel_reference, failure_reason, failure_message, "
    "failure_decline_code")
# The columns an item is read with (item_from_row): its version is written
# only with the events that report it.
ITEM_COLUMNS = f"{STORED_ITEM_COLUMNS}, version"

_ITEM_STATUS = {status.value: status for status in BatchItemStatus}

item_status = attrgetter("status")


def every_item(value_of: Callable[[BatchItem], Any], value: Any,
               items: Sequence[BatchItem]) -> bool:
    """Whether value_of(item) == value for each of `items`, compared in C
    (map and list.count): the writer asks it of every chunk and group to
    take the path of the many (items as they arrived, results with no
    failure, a group all SUCCEEDED); a Python test per item costs more than
    the path saves (an Enum's hash alone is Python code)."""
    return list(map(value_of, items)).count(value) == len(items)


def batch_from_row(row: Mapping[str, Any]) -> Batch:
    header = BatchHeader(row["batch_id"], row["payer"], GroupingPolicy(row["grouping"]),
                         row["max_group_size"], row["parallelism"],
                         failure_policy=FailurePolicy(row["failure_policy"]))
    return Batch(
        tenant_id=row["tenant_id"], batch_id=row["batch_id"], uid=row["uid"], header=header,
        fingerprint=row["fingerprint"],
        status=BatchStatus(row["status"]), submissions=row["submissions"],
        created_at_us=row["created_at_us"], completed_at_us=row["completed_at_us"],
        wall_us_before=row["wall_us_before"],
        submission_started_at_us=row["submission_started_at_us"], version=row["version"])


def item_from_row(row: Sequence[Any]) -> BatchItem:
    """A row that starts with ITEM_COLUMNS. Unpacked by position: three
    times cheaper than by name, per item read."""
    (seq, reference, payee, currency, amount_minor, requested_channel, requested_at_us, channel,
     status, attempt, group_no, channel_reference, failure_reason, failure_message,
     failure_decline_code, version, *_) = row
    return BatchItem(
        seq=seq, reference=reference, payee=payee, amount=Money(currency, amount_minor),
        requested_channel=requested_channel, requested_at_us=requested_at_us, channel=channel,
        status=_ITEM_STATUS[status], attempt=attempt, group_no=group_no,
        channel_reference=channel_reference,
        failure=failure_from_columns(failure_reason, failure_message, failure_decline_code),
        version=version)


def item_insert_row(item: BatchItem) -> tuple:
    """An item as stored first: STORED_ITEM_COLUMNS."""
    return (item.seq, item.reference, item.payee, item.amount.currency, item.amount.amount_minor,
            item.requested_channel, item.requested_at_us, item.channel, item.status.value,
            item.attempt, item.group_no, item.channel_reference, *failure_columns(item.failure))


def item_state_row(item: BatchItem) -> tuple:
    """What changes of an item after it is stored: seq, status, attempt,
    group_no, channel_reference, failure_reason, failure_message,
    failure_decline_code."""
    return (item.seq, item.status.value, item.attempt, item.group_no, item.channel_reference,
            *failure_columns(item.failure))


def counts_from_rows(status_counts: Sequence[Sequence[Any]],
                     unstored_rejections: int) -> BatchCounts:
    """The batch's counts from its items' (status, count) rows, plus the
    rejections that were never stored as items; the rest are in progress."""
    by_status = {BatchItemStatus(status): n for status, n in status_counts}
    rejected = by_status.get(BatchItemStatus.REJECTED, 0) + unstored_rejections
    succeeded = by_status.get(BatchItemStatus.SUCCEEDED, 0)
    failed = by_status.get(BatchItemStatus.FAILED, 0)
    total = sum(by_status.values()) + unstored_rejections
    return BatchCounts(total, succeeded, failed, rejected,
                       total - succeeded - failed - rejected)
