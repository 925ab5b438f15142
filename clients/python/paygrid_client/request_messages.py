"""Typed inputs (legs, refund legs) and the request messages built from
them; idempotency keys are made here, once per logical payment or refund."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence

from paygrid.type.v1 import money_pb2
from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import event_service_pb2 as ev
from paygrid.v1 import payment_service_pb2 as pb

# The server takes 1 to 1000 transactions per message; 500 keeps a message
# far below the 1 MiB limit whatever the field lengths.
DEFAULT_BATCH_CHUNK_ITEMS = 500
MAX_BATCH_CHUNK_ITEMS = 1000


def new_idempotency_key(prefix: str = "pay") -> str:
    """A fresh key for one logical payment or refund; reuse it on every retry."""
    return f"{prefix}-{uuid.uuid4()}"


def check_minor_units(amount_minor: object) -> None:
    """Amounts are ints of minor units: a float (or Decimal, or str) is
    refused, never rounded. Range and sign are the server's to judge."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise TypeError(f"amount_minor must be an int of minor units, got {amount_minor!r}")


def money(currency: str, amount_minor: int, minor_units: int | None = None) -> money_pb2.Money:
    check_minor_units(amount_minor)
    message = money_pb2.Money(currency=currency, amount_minor=amount_minor)
    if minor_units is not None:
        message.minor_units = minor_units
    return message


@dataclass(frozen=True, slots=True)
class Leg:
    """One amount owed to one payee. `channel` empty: paygrid routes it.
    `minor_units`, when set, guards against a wrong idea of the currency's
    exponent (the server refuses a mismatch)."""

    payee: str
    currency: str
    amount_minor: int
    channel: str = ""
    reference: str = ""
    minor_units: int | None = None

    def __post_init__(self) -> None:
        check_minor_units(self.amount_minor)

    def to_proto(self) -> pb.PayLeg:
        return pb.PayLeg(payee=self.payee,
                         amount=money(self.currency, self.amount_minor, self.minor_units),
                         channel=self.channel, reference=self.reference)


@dataclass(frozen=True, slots=True)
class RefundLeg:
    """Refund of one leg: `amount_minor` None refunds what remains of it."""

    leg_index: int
    currency: str = ""
    amount_minor: int | None = None

    def __post_init__(self) -> None:
        if self.amount_minor is not None:
            check_minor_units(self.amount_minor)

    def to_proto(self) -> pb.RefundLeg:
        leg = pb.RefundLeg(leg_index=self.leg_index)
        if self.amount_minor is not None:
            leg.amount.CopyFrom(money(self.currency, self.amount_minor))
        return leg


def pay_request(payer: str, legs: Sequence[Leg | pb.PayLeg], *, idempotency_key: str,
                mode: pb.PaymentMode.ValueType = pb.PAYMENT_MODE_UNSPECIFIED,
                metadata: Mapping[str, str] | None = None,
                wait: pb.PayWait.ValueType = pb.PAY_WAIT_UNSPECIFIED) -> pb.PayRequest:
    return pb.PayRequest(idempotency_key=idempotency_key, payer=payer, mode=mode, wait=wait,
                         legs=[leg.to_proto() if isinstance(leg, Leg) else leg for leg in legs],
                         metadata=dict(metadata or {}))


def refund_request(payment_id: str, legs: Sequence[RefundLeg | pb.RefundLeg], *,
                   idempotency_key: str, reason: str = "") -> pb.RefundPaymentRequest:
    return pb.RefundPaymentRequest(
        payment_id=payment_id, idempotency_key=idempotency_key, reason=reason,
        legs=[leg.to_proto() if isinstance(leg, RefundLeg) else leg for leg in legs])


def watch_request(*, after_cursor: int = 0,
                  start: ev.StartPosition.ValueType = ev.START_POSITION_UNSPECIFIED,
                  consumer: str = "", type_prefix: str = "",
                  subject: str = "") -> ev.WatchEventsRequest:
    return ev.WatchEventsRequest(after_cursor=after_cursor, start=start, consumer=consumer,
                                 type_prefix=type_prefix, subject=subject)


def resumed_watch(request: ev.WatchEventsRequest, cursor: int) -> ev.WatchEventsRequest:
    """The same watch, again after `cursor` (the last one received): a
    reconnection neither repeats nor skips an event."""
    return ev.WatchEventsRequest(after_cursor=cursor, type_prefix=request.type_prefix,
                                 subject=request.subject)


def checked_chunk_items(chunk_items: int) -> int:
    if not 1 <= chunk_items <= MAX_BATCH_CHUNK_ITEMS:
        raise ValueError(f"chunk_items must be 1 to {MAX_BATCH_CHUNK_ITEMS}, got {chunk_items}")
    return chunk_items


def batch_header(batch_id: str, payer: str, grouping: batch_pb.GroupingPolicy.ValueType,
                 max_group_size: int, parallelism: int, control_item_count: int | None,
                 control_sum: str, failure_policy: batch_pb.FailurePolicy.ValueType
                 ) -> batch_pb.BatchHeader:
    """The first message's header. Control totals (as pain.001 NbOfTxs and
    CtrlSum) make the server hold every transaction until the stream ends
    and refuse the batch if they do not match what it received."""
    header = batch_pb.BatchHeader(batch_id=batch_id, payer=payer, grouping=grouping,
                                  max_group_size=max_group_size, parallelism=parallelism,
                                  control_sum=control_sum, failure_policy=failure_policy)
    if control_item_count is not None:
        header.control_item_count = control_item_count
    return header


END_OF_BATCH = batch_pb.SubmitBatchRequest(end=batch_pb.BatchEnd())


def batch_requests(header: batch_pb.BatchHeader, transactions: Iterable[batch_pb.BatchTransaction],
                   chunk_items: int) -> Iterator[batch_pb.SubmitBatchRequest]:
    """The header, then the transactions in chunks, read lazily (any size),
    then the end message, which completes the batch at once (a bare
    half-close would end it ~100 ms later)."""
    yield batch_pb.SubmitBatchRequest(header=header)
    chunk: list[batch_pb.BatchTransaction] = []
    for transaction in transactions:
        chunk.append(transaction)
        if len(chunk) == chunk_items:
            yield _chunk_message(chunk)
            chunk = []
    if chunk:
        yield _chunk_message(chunk)
    yield END_OF_BATCH


async def async_batch_requests(header: batch_pb.BatchHeader,
                               transactions: AsyncIterable[batch_pb.BatchTransaction],
                               chunk_items: int) -> AsyncIterator[batch_pb.SubmitBatchRequest]:
    yield batch_pb.SubmitBatchRequest(header=header)
    chunk: list[batch_pb.BatchTransaction] = []
    async for transaction in transactions:
        chunk.append(transaction)
        if len(chunk) == chunk_items:
            yield _chunk_message(chunk)
            chunk = []
    if chunk:
        yield _chunk_message(chunk)
    yield END_OF_BATCH


def _chunk_message(chunk: list[batch_pb.BatchTransaction]) -> batch_pb.SubmitBatchRequest:
    return batch_pb.SubmitBatchRequest(
        transactions=batch_pb.BatchTransactions(transactions=chunk))
