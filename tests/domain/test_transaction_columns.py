"""A message's transactions validated as columns (the intake's path, with a
shortcut for items valid as sent) come out exactly as validate_transaction
makes them one by one: the same items, seqs, rejections and routes, and the
same control totals, whatever is wrong with each transaction."""

from __future__ import annotations

import itertools
from decimal import Decimal, localcontext

from paygrid_server.domain.charging.circuit_breaker import CircuitBreaker
from paygrid_server.domain.charging.routing import ChannelRoute, Router
from paygrid_server.domain.model import limits
from paygrid_server.domain.model.batch import BatchItem
from paygrid_server.domain.model.batch_validation import TransactionInput, validate_transaction
from paygrid_server.domain.model.control_totals import ControlTally, major_units
from paygrid_server.domain.model.request_validation import MoneyInput
from paygrid_server.domain.model.transaction_columns import TransactionColumns, validate_columns

ROUTER = Router([ChannelRoute("card", frozenset({"EUR"}), max_amount_minor=10_000, priority=1),
                 ChannelRoute("bank", frozenset())],
                {"card": CircuitBreaker(), "bank": CircuitBreaker()})


def route(item: BatchItem) -> str:
    return ROUTER.first_choice(item.requested_channel, item.amount)


def transactions() -> list[TransactionInput]:
    """Every mix of one good or bad value per field."""
    references = ["r", "", "x" * limits.BATCH_REFERENCE_MAX_CHARS,
                  "x" * (limits.BATCH_REFERENCE_MAX_CHARS + 1), "tab\there"]
    payees = ["p", "", "p" * (limits.PARTY_ID_MAX_CHARS + 1), "nl\n"]
    amounts = [MoneyInput("EUR", 100, None), MoneyInput("EUR", 20_000, None),
               MoneyInput("JPY", 5, None), MoneyInput("EUR", 100, 2), MoneyInput("EUR", 100, 3),
               MoneyInput("QQQ", 1, None), MoneyInput("", 1, None), MoneyInput("EUR", 0, None),
               MoneyInput("EUR", limits.MAX_AMOUNT_MINOR + 1, None), None]
    channels = ["", "card", "bank", "nope", "c" * (limits.CHANNEL_NAME_MAX_CHARS + 1)]
    requested = [None, 1_733_222_222_000_000, "seconds out of range"]
    return [TransactionInput(f"{ref}{n}" if ref.startswith("r") else ref, payee, amount,
                             channel, at)
            for n, (ref, payee, amount, channel, at) in enumerate(itertools.product(
                references, payees, amounts, channels, requested))]


def columns(txs: list[TransactionInput]) -> TransactionColumns:
    """As the transport makes them: unusual ones aside, "" and 0 for no amount."""
    return TransactionColumns(
        [t.reference for t in txs], [t.payee for t in txs], [t.channel for t in txs],
        [t.amount.currency if t.amount else "" for t in txs],
        [t.amount.amount_minor if t.amount else 0 for t in txs],
        {i: t for i, t in enumerate(txs)
         if t.amount is None or t.amount.minor_units is not None or t.requested_at_us is not None})


def one_by_one(txs: list[TransactionInput], seq: int) -> tuple[list, list]:
    items, refused = [], []
    for tx in txs:
        checked = validate_transaction(tx, seq, ROUTER.check, route)
        if isinstance(checked, BatchItem):
            items.append(checked)
            seq += 1
        else:
            refused.append(checked)
    return items, refused


def test_columns_validate_as_one_transaction_at_a_time() -> None:
    txs = transactions()
    valid = validate_columns(columns(txs), 7, len(txs), ROUTER.check, route, ROUTER.sole_choice)
    items, refused = one_by_one(txs, 7)
    assert valid.items == items and valid.refused == refused
    assert valid.next_seq == 7 + len(items)
    # Both sides of the shortcut are taken: valid items, rejected and refused ones.
    assert {i.channel for i in items if i.failure is None} == {"card", "bank"}
    assert any(i.failure is not None for i in items) and refused


def valid_as_sent(count: int, channel: str = "", currency: str = "EUR") -> list[TransactionInput]:
    return [TransactionInput(f"r{n}", f"payee {n}", MoneyInput(currency, 100 + n, None), channel,
                             None) for n in range(count)]


def test_a_message_valid_as_sent_is_taken_whole_with_the_items_made_one_at_a_time() -> None:
    one_route = Router([ChannelRoute("card", frozenset({"EUR", "USD"}), max_amount_minor=10_000)],
                       {"card": CircuitBreaker()})
    mixed = valid_as_sent(3, "card") + valid_as_sent(3, "bank", "JPY") + valid_as_sent(3, "bank")
    for router, txs in [(one_route, valid_as_sent(5)), (one_route, valid_as_sent(4, "", "USD")),
                        (one_route, valid_as_sent(5) + valid_as_sent(5, "card", "USD")),
                        (ROUTER, valid_as_sent(5, "bank")), (ROUTER, mixed)]:
        routed_one_by_one = []

        def route_one(item: BatchItem) -> str:
            routed_one_by_one.append(item)
            return router.first_choice(item.requested_channel, item.amount)

        valid = validate_columns(columns(txs), 7, len(txs), router.check, route_one,
                                 router.sole_choice)
        assert routed_one_by_one == []  # whole: no item asked its route
        items, refused = [], []
        for seq, tx in enumerate(txs, 7):
            items.append(validate_transaction(tx, seq, router.check, route_one))
        assert valid.items == items and valid.refused == [] and valid.next_seq == 7 + len(txs)
    assert {i.channel for i in valid.items} == {"card", "bank"}


def test_one_transaction_not_valid_as_sent_takes_its_message_one_at_a_time() -> None:
    """Each transaction of every kind, among ones valid as sent: whatever
    is wrong with it (or its route by amount: the card takes up to 10,000
    EUR, "" is routed by amount) is found as when each is checked alone."""
    for odd in transactions()[::3] + [
            TransactionInput("big", "p", MoneyInput("EUR", 20_000, None), "card", None),
            TransactionInput("big", "p", MoneyInput("EUR", 20_000, None), "", None)]:
        txs = valid_as_sent(2, "card") + [odd] + valid_as_sent(2, "card")
        txs[3:] = [t._replace(reference=f"s{n}") for n, t in enumerate(txs[3:])]
        valid = validate_columns(columns(txs), 1, len(txs), ROUTER.check, route,
                                 ROUTER.sole_choice)
        items, refused = one_by_one(txs, 1)
        assert (valid.items, valid.refused) == (items, refused), odd


def test_past_the_room_left_each_transaction_is_refused_for_the_batch_limit() -> None:
    txs = [TransactionInput(f"r{n}", "p", MoneyInput("EUR", 100, None), "", None)
           for n in range(5)]
    valid = validate_columns(columns(txs), 1, 3, ROUTER.check, route, ROUTER.sole_choice)
    assert [i.reference for i in valid.items] == ["r0", "r1", "r2"]
    assert [(r.reference, r.failure.reason.value) for r in valid.refused] == [
        ("r3", "BATCH_LIMIT"), ("r4", "BATCH_LIMIT")]


def test_control_totals_of_columns_are_those_of_each_amount() -> None:
    txs = transactions()
    plain = [t for t in txs if t.amount is not None and t.amount.minor_units is None
             and t.requested_at_us is None]
    for sent in (txs, plain):  # with unusual transactions, and without
        by_columns, by_items = ControlTally(), ControlTally()
        by_columns.add_columns(columns(sent))
        for tx in sent:
            by_items.add(tx.amount)
        with localcontext(prec=64):  # each amount in major units, summed exactly
            expected = sum((major_units(t.amount) for t in sent if t.amount), Decimal(0))
        assert by_columns.item_count == by_items.item_count == len(sent)
        assert str(by_columns.amount_sum) == str(by_items.amount_sum) == str(expected) != "0"
    tally = ControlTally()
    tally.add_columns(columns([TransactionInput("a", "p", MoneyInput("EUR", 1_250, None), "", None),
                               TransactionInput("b", "p", MoneyInput("JPY", 300, None), "", None),
                               TransactionInput("c", "p", MoneyInput("KWD", 1, None), "", None)]))
    assert tally.amount_sum == Decimal("312.501")
