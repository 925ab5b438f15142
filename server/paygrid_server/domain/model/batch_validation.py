"""Checks for a batch header (the stream is refused) and for each item (only
that item is refused, the batch goes on)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

from paygrid_server.domain.model import limits
from paygrid_server.domain.model.batch import (
    BatchHeader,
    BatchItem,
    BatchItemStatus,
    FailurePolicy,
    GroupingPolicy,
    ItemResult,
)
from paygrid_server.domain.model.control_totals import ControlTotals, parse_control_sum
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import Failure, FailureReason
from paygrid_server.domain.model.request_validation import (
    ChannelCheck,
    MoneyInput,
    Violations,
    check_idempotency_key,
    check_money,
    check_text,
)


# Picks the channel for a valid item.
RouteChooser = Callable[[BatchItem], str]


@dataclass(frozen=True, slots=True)
class BatchHeaderInput:
    batch_id: str
    payer: str
    grouping: GroupingPolicy | str | None  # None: default; str: a value the server does not know
    max_group_size: int
    parallelism: int
    control_item_count: int | None = None  # None: not declared
    control_sum: str = ""  # "": not declared
    # None: default; str: a value the server does not know
    failure_policy: FailurePolicy | str | None = None


class TransactionInput(NamedTuple):
    # A NamedTuple, as MoneyInput is: one per item of every batch.
    reference: str
    payee: str
    amount: MoneyInput | None
    channel: str
    requested_at_us: int | str | None  # None: not set; str: why the timestamp is not valid


def validate_header(header: BatchHeaderInput) -> BatchHeader:
    v = Violations()
    check_idempotency_key(v, "header.batch_id", header.batch_id)
    if len(header.batch_id) > limits.BATCH_ID_MAX_CHARS:
        v.add("header.batch_id", f"{len(header.batch_id)} characters; at most "
                                 f"{limits.BATCH_ID_MAX_CHARS}")
    check_text(v, "header.payer", header.payer, limits.PARTY_ID_MAX_CHARS, required=True)
    if isinstance(header.grouping, str):
        v.add("header.grouping", f"unknown grouping policy {header.grouping}")
    if header.max_group_size > limits.BATCH_MAX_GROUP_SIZE:
        v.add("header.max_group_size", f"{header.max_group_size}; at most "
                                       f"{limits.BATCH_MAX_GROUP_SIZE}")
    if isinstance(header.failure_policy, str):
        v.add("header.failure_policy", f"unknown failure policy {header.failure_policy}")
    if header.parallelism > limits.BATCH_MAX_PARALLELISM:
        v.add("header.parallelism", f"{header.parallelism}; at most {limits.BATCH_MAX_PARALLELISM}")
    control = _control_totals(v, header)
    v.raise_if_any()
    return BatchHeader(
        control=control,
        failure_policy=header.failure_policy if isinstance(header.failure_policy, FailurePolicy)
        else FailurePolicy.CONTINUE,
        batch_id=header.batch_id,
        payer=header.payer,
        grouping=header.grouping if isinstance(header.grouping, GroupingPolicy)
        else GroupingPolicy.CHANNEL_AND_CURRENCY,
        max_group_size=header.max_group_size or limits.BATCH_DEFAULT_GROUP_SIZE,
        parallelism=header.parallelism or limits.BATCH_DEFAULT_PARALLELISM,
    )


def _control_totals(v: Violations, header: BatchHeaderInput) -> ControlTotals | None:
    return _declared_totals(v, "header", header.control_item_count, header.control_sum)


def validate_end_totals(count: int | None, control_sum: str) -> ControlTotals | None:
    """The control totals a BatchEnd declares (None: none), checked as the
    header's are."""
    v = Violations()
    totals = _declared_totals(v, "end", count, control_sum)
    v.raise_if_any()
    return totals


def _declared_totals(v: Violations, where: str, count: int | None,
                     control_sum: str) -> ControlTotals | None:
    if count is not None and not 1 <= count <= limits.BATCH_MAX_ITEMS:
        v.add(f"{where}.control_item_count", f"{count}; a batch holds 1 to "
                                             f"{limits.BATCH_MAX_ITEMS} transactions")
    amount_sum = None
    if control_sum:
        amount_sum = parse_control_sum(control_sum)
        if isinstance(amount_sum, str):
            v.add(f"{where}.control_sum", amount_sum)
            amount_sum = None
    if count is None and not control_sum:
        return None
    return ControlTotals(count, amount_sum)


def validate_transaction(tx: TransactionInput, seq: int, channel_check: ChannelCheck,
                         route: RouteChooser) -> BatchItem | ItemResult:
    """A RECEIVED item; a REJECTED item (stored, its reference is usable);
    or an ItemResult when even the reference is unusable (not stored)."""
    ref = Violations()
    check_text(ref, "reference", tx.reference, limits.BATCH_REFERENCE_MAX_CHARS, required=True)
    if ref.items:
        return ItemResult(tx.reference[: limits.BATCH_REFERENCE_MAX_CHARS],
                          BatchItemStatus.REJECTED,
                          failure=Failure(FailureReason.INVALID_ITEM, _describe(ref)))
    v = Violations()
    check_text(v, "payee", tx.payee, limits.PARTY_ID_MAX_CHARS, required=True)
    check_text(v, "channel", tx.channel, limits.CHANNEL_NAME_MAX_CHARS, required=False)
    money = check_money(v, "amount", tx.amount)
    if money is not None:
        problem = channel_check(tx.channel, money)
        if problem:
            v.add("channel" if tx.channel else "amount", problem)
    requested_at_us = tx.requested_at_us
    if isinstance(requested_at_us, str):
        v.add("requested_at", requested_at_us)
        requested_at_us = None
    if money is None:
        raw = tx.amount or MoneyInput("", 0, None)
        money = Money(raw.currency[:16], raw.amount_minor)  # bounded, as sent
    item = BatchItem(
        seq=seq, reference=tx.reference, payee=tx.payee[: limits.PARTY_ID_MAX_CHARS],
        amount=money,
        requested_channel=tx.channel[: limits.CHANNEL_NAME_MAX_CHARS],
        requested_at_us=requested_at_us, channel="")
    if v.items:
        item.status = BatchItemStatus.REJECTED
        item.failure = Failure(FailureReason.INVALID_ITEM, _describe(v))
    else:
        item.channel = route(item)
    return item


def _describe(v: Violations) -> str:
    return "; ".join(f"{violation.field}: {violation.description}" for violation in v.items)

