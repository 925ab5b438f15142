"""Conversions between paygrid.v1 batch messages and domain objects. No logic."""

from __future__ import annotations

from typing import Iterable

from google.protobuf import duration_pb2, timestamp_pb2

from paygrid.v1 import batch_service_pb2 as pb
from paygrid_server.domain.model.batch import (
    Batch,
    BatchCounts,
    BatchGroup,
    BatchItem,
    BatchItemStatus,
    FailurePolicy,
    GroupingPolicy,
    ItemResult,
)
from paygrid_server.domain.batches.events import (
    BatchEvent,
    BatchSummary,
    GroupCompleted,
    ItemsAlreadyProcessed,
    ItemsRejected,
)
from paygrid_server.domain.batches.service import BatchReport
from paygrid_server.domain.batches.timing import BatchTiming
from paygrid_server.domain.model.control_totals import ControlTotals
from paygrid_server.domain.model.batch_validation import (
    BatchHeaderInput,
    TransactionInput,
    validate_end_totals,
)
from paygrid_server.domain.model.errors import FieldViolation, InvalidRequest
from paygrid_server.domain.model.transaction_columns import TransactionColumns
from paygrid_server.transport.payment_messages import failure_pb, money_input, money_pb

_GROUPING = {
    pb.GROUPING_POLICY_UNSPECIFIED: None,
    pb.GROUPING_POLICY_CHANNEL_AND_CURRENCY: GroupingPolicy.CHANNEL_AND_CURRENCY,
    pb.GROUPING_POLICY_CHANNEL: GroupingPolicy.CHANNEL,
    pb.GROUPING_POLICY_CHANNEL_CURRENCY_AND_PAYEE: GroupingPolicy.CHANNEL_CURRENCY_AND_PAYEE,
}


_FAILURE_POLICY = {pb.FAILURE_POLICY_UNSPECIFIED: None} | {
    pb.FailurePolicy.Value(f"FAILURE_POLICY_{policy.value}"): policy for policy in FailurePolicy}


def header_input(header: pb.BatchHeader) -> BatchHeaderInput:
    return BatchHeaderInput(
        batch_id=header.batch_id, payer=header.payer,
        grouping=_GROUPING.get(header.grouping, f"number {header.grouping}"),
        max_group_size=header.max_group_size, parallelism=header.parallelism,
        control_item_count=(header.control_item_count if header.HasField("control_item_count")
                            else None),
        control_sum=header.control_sum,
        failure_policy=_FAILURE_POLICY.get(header.failure_policy,
                                           f"number {header.failure_policy}"))


def end_totals(end: pb.BatchEnd) -> ControlTotals | None:
    """The end message's control totals; InvalidRequest when malformed."""
    return validate_end_totals(
        end.control_item_count if end.HasField("control_item_count") else None,
        end.control_sum)


def transaction_inputs(chunk: pb.BatchTransactions) -> TransactionColumns:
    """A field at a time for all transactions; those with anything more than
    reference, payee, amount and channel also as a TransactionInput each."""
    # A list, not the repeated field: upb makes a Python object for an
    # element each time one is read and drops it after, so each pass over
    # the field would make the message's 500 objects again (x1.5 the cost).
    txs = list(chunk.transactions)
    amounts = [tx.amount for tx in txs]
    return TransactionColumns(
        [tx.reference for tx in txs], [tx.payee for tx in txs], [tx.channel for tx in txs],
        [amount.currency for amount in amounts], [amount.amount_minor for amount in amounts],
        {index: _transaction_input(tx) for index, (tx, amount) in enumerate(zip(txs, amounts))
         if tx.HasField("requested_at") or not tx.HasField("amount")
         or amount.HasField("minor_units")})


def _transaction_input(tx: pb.BatchTransaction) -> TransactionInput:
    return TransactionInput(
        reference=tx.reference, payee=tx.payee,
        amount=money_input(tx.amount) if tx.HasField("amount") else None,
        channel=tx.channel,
        requested_at_us=_requested_at_us(tx),
    )


def _requested_at_us(tx: pb.BatchTransaction) -> int | str | None:
    if not tx.HasField("requested_at"):
        return None
    try:
        return tx.requested_at.ToMicroseconds()
    except ValueError as error:  # seconds or nanos out of a Timestamp's range
        return str(error)


_ITEM_STATUS = {status: pb.BatchItemStatus.Value(f"BATCH_ITEM_STATUS_{status.value}")
                for status in BatchItemStatus}


_SUCCEEDED_NO = _ITEM_STATUS[BatchItemStatus.SUCCEEDED]


def item_status(status: BatchItemStatus) -> int:
    return _ITEM_STATUS[status]


_ITEM_STATUS_FROM = {number: status for status, number in _ITEM_STATUS.items()}


def item_status_from(number: int) -> BatchItemStatus | None:
    """The status a ListBatchItems asks for; None for all of them."""
    if number == pb.BATCH_ITEM_STATUS_UNSPECIFIED:
        return None
    status = _ITEM_STATUS_FROM.get(number)
    if status is None:  # proto3 enums are open: any int32 arrives
        raise InvalidRequest([FieldViolation("status", f"unknown batch item status {number}")])
    return status


def _stamp(at_us: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(at_us)
    return stamp


def _span(us: int) -> duration_pb2.Duration:
    span = duration_pb2.Duration()
    span.FromMicroseconds(us)
    return span


def result_pb(result: ItemResult) -> pb.BatchItemResult:
    return pb.BatchItemResult(
        reference=result.reference, status=item_status(result.status), channel=result.channel,
        channel_reference=result.channel_reference, failure=failure_pb(result.failure),
        group_no=result.group_no)


def _add_results(results, items: Iterable[ItemResult | BatchItem]) -> None:
    """Appends a BatchItemResult per item to the repeated field `results`.
    Filled in place: building each message apart and copying it in costs
    twice as much, per item of every batch. A BatchItem has the fields of its
    ItemResult, so a group's items need no ItemResult each."""
    # Fields set one by one: upb takes keyword arguments to add() at about
    # twice the cost. A status is looked up only when not SUCCEEDED (an
    # Enum's hash is Python code).
    add, succeeded, succeeded_no = results.add, BatchItemStatus.SUCCEEDED, _SUCCEEDED_NO
    for item in items:
        result = add()
        status = item.status
        result.reference, result.channel = item.reference, item.channel
        result.status = succeeded_no if status is succeeded else _ITEM_STATUS[status]
        result.channel_reference, result.group_no = item.channel_reference, item.group_no
        if item.failure is not None:
            result.failure.CopyFrom(failure_pb(item.failure))


def _fill_group(message: pb.GroupResult, group: BatchGroup) -> None:
    message.group_no, message.group_key = group.group_no, group.key
    message.started_at.FromMicroseconds(group.started_at_us)
    message.completed_at.FromMicroseconds(group.completed_at_us)
    message.processing_time.FromMicroseconds(group.processing_us)
    _add_results(message.items, group.items)


def counts_pb(counts: BatchCounts) -> pb.BatchCounts:
    return pb.BatchCounts(total=counts.total, succeeded=counts.succeeded, failed=counts.failed,
                          rejected=counts.rejected, pending=counts.pending)


def timing_pb(timing: BatchTiming) -> pb.BatchTiming:
    return pb.BatchTiming(wall_time=_span(timing.wall_us),
                          average_processing_time=_span(timing.apt_us),
                          throughput_items_per_second=timing.throughput_items_per_s,
                          groups=timing.groups,
                          model_throughput_items_per_second=timing.model_throughput_items_per_s)


def timing_metadata(timing: BatchTiming) -> tuple[tuple[str, str], ...]:
    return (("x-paygrid-apt-ms", f"{timing.apt_us / 1_000:.3f}"),
            ("x-paygrid-throughput", f"{timing.throughput_items_per_s:.1f}"),  # measured
            ("x-paygrid-model-throughput", f"{timing.model_throughput_items_per_s:.1f}"),
            ("x-paygrid-wall-ms", f"{timing.wall_us / 1_000:.3f}"))


def event_pb(event: BatchEvent) -> pb.SubmitBatchResponse:
    # Filled in place, not built apart and copied in (see _add_results).
    if isinstance(event, ItemsRejected):
        response = pb.SubmitBatchResponse(rejected=pb.BatchItemResults())
        _add_results(response.rejected.items, event.items)
        return response
    if isinstance(event, ItemsAlreadyProcessed):
        response = pb.SubmitBatchResponse(already_processed=pb.BatchItemResults())
        _add_results(response.already_processed.items, event.items)
        return response
    if isinstance(event, GroupCompleted):
        response = pb.SubmitBatchResponse(group=pb.GroupResult())
        _group_as_stored(response.group, event.group)
        return response
    assert isinstance(event, BatchSummary)
    return pb.SubmitBatchResponse(summary=pb.BatchSummary(
        batch_id=event.batch_id, status=pb.BatchStatus.Value(f"BATCH_STATUS_{event.status.value}"),
        counts=counts_pb(event.counts), timing=timing_pb(event.timing)))


_GROUP_RESULT = pb.GroupResult.DESCRIPTOR.full_name


def _group_as_stored(message: pb.GroupResult, group: BatchGroup) -> None:
    """`group` into `message`: from the bytes its event stored, when this
    process stored it (one parse in C: 0.18 against 1.4 µs an item for
    _fill_group, message and serialization included), else field by field."""
    snapshot = group.stored_snapshot
    if snapshot is not None and snapshot[0] == _GROUP_RESULT:
        message.MergeFromString(snapshot[1])
    else:
        _fill_group(message, group)


def batch_pb(report: BatchReport) -> pb.Batch:
    batch: Batch = report.batch
    message = pb.Batch(
        batch_id=batch.batch_id, payer=batch.header.payer,
        status=pb.BatchStatus.Value(f"BATCH_STATUS_{batch.status.value}"),
        counts=counts_pb(report.counts), timing=timing_pb(report.timing),
        grouping=pb.GroupingPolicy.Value(f"GROUPING_POLICY_{batch.header.grouping.value}"),
        submissions=batch.submissions, created_at=_stamp(batch.created_at_us),
        failure_policy=pb.FailurePolicy.Value(
            f"FAILURE_POLICY_{batch.header.failure_policy.value}"),
        version=batch.version)
    if batch.completed_at_us is not None:
        message.completed_at.CopyFrom(_stamp(batch.completed_at_us))
    return message


def batch_item_pb(item: BatchItem) -> pb.BatchItem:
    transaction = pb.BatchTransaction(reference=item.reference, payee=item.payee,
                                      amount=money_pb(item.amount),
                                      channel=item.requested_channel)
    if item.requested_at_us is not None:
        transaction.requested_at.CopyFrom(_stamp(item.requested_at_us))
    return pb.BatchItem(transaction=transaction, result=result_pb(item.result()),
                        version=item.version)


def group_pb(group: BatchGroup) -> pb.GroupResult:
    message = pb.GroupResult()
    _fill_group(message, group)
    return message
