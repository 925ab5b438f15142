"""A message's batch transactions as one list per field, validated in one
pass: the transport reads each field of all of them at once, and an item
valid as sent becomes a BatchItem with no object in between (a batch of a
million items would otherwise make two million inputs to check)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

from paygrid_server.domain.model import limits
from paygrid_server.domain.model.batch import BatchItem, BatchItemStatus, ItemResult
from paygrid_server.domain.model.batch_validation import (
    RouteChooser,
    TransactionInput,
    validate_transaction,
)
from paygrid_server.domain.model.currencies import minor_units
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import Failure, FailureReason
from paygrid_server.domain.model.request_validation import ChannelCheck, MoneyInput


# The channel that every amount from low to high minor units of a currency
# sent to a channel ("": routed) is charged with, when each passes the
# channel check; None when that may differ by amount (Router.sole_choice).
SoleRoute = Callable[[str, str, int, int], str | None]


@dataclass(slots=True)
class TransactionColumns:
    references: list[str]
    payees: list[str]
    channels: list[str]
    currencies: list[str]  # "" where no amount was sent
    amounts_minor: list[int]  # 0 where no amount was sent
    # By index: those sent without an amount, with the amount's minor_units
    # guard or with requested_at, as TransactionInputs (checked one by one).
    unusual: dict[int, TransactionInput]

    def __len__(self) -> int:
        return len(self.references)

    def input(self, index: int) -> TransactionInput:
        found = self.unusual.get(index)
        if found is not None:
            return found
        return TransactionInput(
            self.references[index], self.payees[index],
            MoneyInput(self.currencies[index], self.amounts_minor[index], None),
            self.channels[index], None)


@dataclass(slots=True)
class Validated:
    items: list[BatchItem]  # RECEIVED or REJECTED, to store
    refused: list[ItemResult]  # not stored: an unusable reference, or past the batch's limit
    next_seq: int


def validate_columns(columns: TransactionColumns, next_seq: int, room: int,
                     channel_check: ChannelCheck, route: RouteChooser,
                     sole_route: SoleRoute) -> Validated:
    """validate_transaction for each transaction in order, seqs from
    `next_seq`; past `room` more items, each is refused (BATCH_LIMIT)."""
    whole = _all_valid_as_sent(columns, next_seq, room, sole_route)
    if whole is not None:
        return Validated(whole, [], next_seq + len(whole))
    items: list[BatchItem] = []
    refused: list[ItemResult] = []
    seq, unusual = next_seq, columns.unusual
    for index, (reference, payee, channel, currency, amount_minor) in enumerate(zip(
            columns.references, columns.payees, columns.channels, columns.currencies,
            columns.amounts_minor)):
        if len(items) >= room:
            refused.append(ItemResult(reference, BatchItemStatus.REJECTED, failure=Failure(
                FailureReason.BATCH_LIMIT, f"a batch holds at most {limits.BATCH_MAX_ITEMS} items")))
            continue
        money = None if unusual and index in unusual else _valid_as_sent(
            reference, payee, channel, currency, amount_minor, channel_check)
        if money is not None:  # the common case: _valid_as_sent's checks, inlined
            item = BatchItem(seq, reference, payee, money, channel, None, "")
            item.channel = route(item)
        else:
            checked = validate_transaction(columns.input(index), seq, channel_check, route)
            if isinstance(checked, ItemResult):
                refused.append(checked)
                continue
            item = checked
        seq += 1
        items.append(item)
    return Validated(items, refused, seq)


def _valid_as_sent(reference: str, payee: str, channel: str, currency: str, amount_minor: int,
                   channel_check: ChannelCheck) -> Money | None:
    """The item's Money when validate_transaction would find nothing wrong
    with it (sent with an amount, no minor_units guard, no requested_at);
    None when it might (it then says what)."""
    if not (0 < len(reference) <= limits.BATCH_REFERENCE_MAX_CHARS and reference.isprintable()
            and 0 < len(payee) <= limits.PARTY_ID_MAX_CHARS and payee.isprintable()
            and len(channel) <= limits.CHANNEL_NAME_MAX_CHARS and channel.isprintable()
            and 0 < amount_minor <= limits.MAX_AMOUNT_MINOR
            and minor_units(currency) is not None):
        return None
    money = Money(currency, amount_minor)
    return money if channel_check(channel, money) is None else None


def _all_valid_as_sent(columns: TransactionColumns, next_seq: int, room: int,
                       sole_route: SoleRoute) -> list[BatchItem] | None:
    """The message's items when every one is valid as sent (_valid_as_sent's
    checks, each made once for a whole field, in C) and routed the same
    way whatever its amount; None when any may not be (then one by one).
    The usual message (each transaction valid, sent to a named channel or
    to the only one) is taken this way."""
    references, payees, channels = columns.references, columns.payees, columns.channels
    currencies, amounts = columns.currencies, columns.amounts_minor
    if columns.unusual or not 0 < len(references) <= room:
        return None
    # A joined text is printable when each part is.
    if not (min(map(len, references)) > 0
            and max(map(len, references)) <= limits.BATCH_REFERENCE_MAX_CHARS
            and min(map(len, payees)) > 0 and max(map(len, payees)) <= limits.PARTY_ID_MAX_CHARS
            and max(map(len, channels)) <= limits.CHANNEL_NAME_MAX_CHARS
            and "".join(references).isprintable() and "".join(payees).isprintable()
            and "".join(channels).isprintable()):
        return None
    low, high = min(amounts), max(amounts)
    if not 0 < low <= high <= limits.MAX_AMOUNT_MINOR:
        return None
    routes: dict[tuple[str, str], str] = {}
    for channel, currency in set(zip(channels, currencies)):
        name = sole_route(channel, currency, low, high) if minor_units(currency) is not None \
            else None
        if name is None:
            return None
        routes[channel, currency] = name
    # The usual message: one channel for all.
    chosen = itertools.repeat(routes.popitem()[1]) if len(set(routes.values())) == 1 \
        else map(routes.__getitem__, zip(channels, currencies))
    return [BatchItem(seq, reference, payee, Money(currency, amount), channel, None, route)
            for seq, reference, payee, channel, currency, amount, route in zip(
                itertools.count(next_seq), references, payees, channels, currencies, amounts,
                chosen)]
