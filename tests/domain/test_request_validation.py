"""Edge validation, limit by limit: exactly at each limit accepted, one past
it refused with the field named; and the pain.001 control totals (18 digits,
17 after the point). The domain's validators are called directly (fast);
the gRPC mapping of their violations is tested in test_bad_input.py."""

from __future__ import annotations

import sys
from decimal import Decimal

import pytest

from paygrid_server.domain.model import limits
from paygrid_server.domain.model.control_totals import (
    ControlTally,
    ControlTotals,
    major_units,
    parse_control_sum,
)
from paygrid_server.domain.model.errors import FieldViolation, InvalidRequest
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import LegRequest, PaymentMode, PaymentRequest
from paygrid_server.domain.model.request_validation import (
    LegInput,
    MoneyInput,
    PayInput,
    Violations,
    check_idempotency_key,
    check_metadata,
    check_money,
    check_text,
    is_printable_ascii_without_spaces,
    validate_pay,
)

MAX = limits.MAX_AMOUNT_MINOR


def violations_of(check, *args, **kwargs) -> list[tuple[str, str]]:
    v = Violations()
    check(v, *args, **kwargs)
    return [(item.field, item.description) for item in v.items]


def usd(amount: int = 1_000, minor: int | None = None) -> MoneyInput:
    return MoneyInput("USD", amount, minor)


def pay_input(legs=None, **changes) -> PayInput:
    fields = dict(idempotency_key="k-1", payer="acct_1",
                  legs=[LegInput("m1", usd(), "", "ref")] if legs is None else legs,
                  mode=None, metadata={})
    return PayInput(**(fields | changes))


def every_channel(channel: str, money: Money) -> str | None:
    return None


def refused(request: PayInput, channel_check=every_channel) -> list[tuple[str, str]]:
    with pytest.raises(InvalidRequest) as error:
        validate_pay(request, channel_check)
    return [(v.field, v.description) for v in error.value.violations]


# -- idempotency key: 1 to 255 printable ASCII, no spaces --------------------


def test_an_idempotency_key_of_255_characters_is_accepted_and_256_refused() -> None:
    assert limits.IDEMPOTENCY_KEY_MAX_CHARS == 255
    assert violations_of(check_idempotency_key, "k", "a" * 255) == []
    assert violations_of(check_idempotency_key, "k", "a" * 256) == [
        ("k", "256 characters; at most 255")]


@pytest.mark.parametrize("key, ok", [("!", True), ("~", True), ("a!~z09", True),
                                     ("a b", False), ("a\x7f", False), ("é", False),
                                     ("a\tb", False)])
def test_an_idempotency_key_is_printable_ascii_without_spaces(key, ok) -> None:
    expected = [] if ok else [("k", "only printable ASCII without spaces is allowed")]
    assert violations_of(check_idempotency_key, "k", key) == expected


def test_printable_ascii_without_spaces_is_exactly_the_characters_from_bang_to_tilde() -> None:
    # The check is three str methods, not a range test per character:
    # every code point is judged as "!" <= ch <= "~" would.
    wrong = [code for code in range(sys.maxunicode + 1)
             if is_printable_ascii_without_spaces(chr(code)) != ("!" <= chr(code) <= "~")]
    assert wrong == []
    assert is_printable_ascii_without_spaces("a!~z09") and not is_printable_ascii_without_spaces("ab é")


def test_an_idempotency_key_is_required() -> None:
    [(field, description)] = violations_of(check_idempotency_key, "k", "")
    assert field == "k" and description.startswith("required")


# -- text fields -----------------------------------------------------------------


def test_text_exactly_at_its_limit_is_accepted_and_one_past_refused() -> None:
    assert violations_of(check_text, "payer", "p" * 128, 128, required=True) == []
    assert violations_of(check_text, "payer", "p" * 129, 128, required=True) == [
        ("payer", "129 characters; at most 128")]


def test_text_required_optional_and_without_control_characters() -> None:
    assert violations_of(check_text, "payer", "", 10, required=True) == [("payer", "required")]
    assert violations_of(check_text, "reference", "", 10, required=False) == []
    assert violations_of(check_text, "reference", "a\nb", 10, required=False) == [
        ("reference", "control characters are not allowed")]
    # Too long and with a control character: the length is what is told.
    assert violations_of(check_text, "reference", "\n" * 11, 10, required=False) == [
        ("reference", "11 characters; at most 10")]


# -- money -----------------------------------------------------------------------


def test_an_amount_of_max_amount_minor_is_accepted_and_one_more_refused() -> None:
    assert MAX == 10**15
    v = Violations()
    assert check_money(v, "a", usd(MAX)) == Money("USD", MAX)
    assert v.items == []
    assert violations_of(check_money, "a", usd(MAX + 1)) == [
        ("a.amount_minor", f"{MAX + 1} exceeds the limit of {MAX} minor units")]


@pytest.mark.parametrize("amount", [0, -1])
def test_an_amount_of_one_is_accepted_and_zero_or_less_refused(amount) -> None:
    v = Violations()
    assert check_money(v, "a", usd(1)) == Money("USD", 1) and v.items == []
    assert violations_of(check_money, "a", usd(amount)) == [
        ("a.amount_minor", f"must be greater than 0, got {amount}")]


def test_a_currency_is_required_payable_and_its_minor_units_must_match() -> None:
    assert violations_of(check_money, "a", None) == [("a", "required")]
    [(field, description)] = violations_of(check_money, "a", MoneyInput("", 5, None))
    assert field == "a.currency" and description.startswith("required")
    assert violations_of(check_money, "a", MoneyInput("XAU", 5, None)) == [
        ("a.currency", "'XAU' is not a payable ISO 4217 currency code")]
    assert violations_of(check_money, "a", MoneyInput("JPY", 5, 2)) == [
        ("a.minor_units", "JPY has 0 minor-unit digits, not 2")]
    for money in (MoneyInput("JPY", 5, 0), MoneyInput("KWD", 5, 3), MoneyInput("JPY", 5, None)):
        v = Violations()
        assert check_money(v, "a", money) == Money(money.currency, 5) and v.items == []


@pytest.mark.parametrize("money", [MoneyInput("", 5, None), MoneyInput("XAU", 5, None),
                                   MoneyInput("USD", 5, 3), MoneyInput("USD", 0, None),
                                   MoneyInput("USD", MAX + 1, None)])
def test_money_with_any_violation_is_not_returned(money) -> None:
    assert check_money(Violations(), "a", money) is None


def test_every_violation_of_one_amount_is_told_at_once() -> None:
    assert [field for field, _ in violations_of(check_money, "a", MoneyInput("XAU", 0, None))] \
        == ["a.currency", "a.amount_minor"]


# -- metadata -----------------------------------------------------------------------


def test_metadata_of_32_entries_is_accepted_and_33_refused() -> None:
    assert violations_of(check_metadata, "m", {f"k{i}": "v" for i in range(32)}) == []
    assert violations_of(check_metadata, "m", {f"k{i}": "" for i in range(33)}) == [
        ("m", "33 entries; at most 32")]  # told once, not per entry as well


def test_metadata_keys_and_values_at_their_limits() -> None:
    assert violations_of(check_metadata, "m", {"k" * 64: "v" * 512, "e": ""}) == []
    assert violations_of(check_metadata, "m", {"k" * 65: "v"}) == [
        (f"m[{'k' * 64!r}]", "65 characters; at most 64")]
    assert violations_of(check_metadata, "m", {"k": "v" * 513}) == [
        ("m['k']", "513 characters; at most 512")]
    assert violations_of(check_metadata, "m", {"": "v"}) == [("m['']", "required")]


# -- a whole Pay request ------------------------------------------------------------


def test_a_valid_request_becomes_a_payment_request() -> None:
    request = pay_input(legs=[LegInput("m1", usd(5), "card", "r1"),
                              LegInput("m2", MoneyInput("JPY", 7, None), "", "")],
                        metadata={"order": "42"})
    got = validate_pay(request, every_channel)
    assert got == PaymentRequest("k-1", "acct_1", (
        LegRequest("m1", Money("USD", 5), "card", "r1"),
        LegRequest("m2", Money("JPY", 7), "", "")), PaymentMode.ALL_OR_NOTHING, {"order": "42"})
    assert got.metadata is not request.metadata  # the request's own copy
    assert validate_pay(pay_input(mode=PaymentMode.INDEPENDENT), every_channel).mode is \
        PaymentMode.INDEPENDENT


def test_16_legs_are_accepted_and_17_refused() -> None:
    assert limits.MAX_LEGS_PER_PAYMENT == 16
    leg = LegInput("m1", usd(), "", "")
    assert len(validate_pay(pay_input(legs=[leg] * 16), every_channel).legs) == 16
    assert refused(pay_input(legs=[leg] * 17)) == [("legs", "17 legs; at most 16")]


def test_legs_past_the_limit_are_not_checked_one_by_one() -> None:
    # 17 bad legs: the count is told, and the first 16 legs' own faults.
    bad = LegInput("", usd(), "", "")
    fields = [field for field, _ in refused(pay_input(legs=[bad] * 17))]
    assert fields == ["legs"] + [f"legs[{i}].payee" for i in range(16)]


def test_at_least_one_leg_is_required() -> None:
    assert refused(pay_input(legs=[])) == [("legs", "at least one leg is required")]


def test_every_field_of_a_request_is_checked_and_told_together() -> None:
    request = pay_input(idempotency_key="", payer="", mode="SOMETIMES",
                        metadata={"": "v"},
                        legs=[LegInput("", None, "c" * 65, "r" * 141)])
    fields = [field for field, _ in refused(request)]
    assert fields == ["idempotency_key", "payer", "mode", "metadata['']", "legs[0].payee",
                      "legs[0].reference", "legs[0].channel", "legs[0].amount"]
    assert ("mode", "unknown mode SOMETIMES; use ALL_OR_NOTHING or INDEPENDENT") in \
        refused(request)


def test_reference_and_channel_exactly_at_their_limits() -> None:
    leg = LegInput("p" * 128, usd(), "c" * 64, "r" * 140)
    assert validate_pay(pay_input(legs=[leg], payer="p" * 128), every_channel).legs[0] == \
        LegRequest("p" * 128, Money("USD", 1_000), "c" * 64, "r" * 140)


def test_the_channel_check_names_the_channel_or_the_amount() -> None:
    asked: list[tuple[str, Money]] = []

    def no_channel(channel: str, money: Money) -> str | None:
        asked.append((channel, money))
        return "nope"

    legs = [LegInput("m1", usd(5), "card", ""), LegInput("m2", usd(6), "", "")]
    assert refused(pay_input(legs=legs), no_channel) == [
        ("legs[0].channel", "nope"), ("legs[1].amount", "nope")]
    assert asked == [("card", Money("USD", 5)), ("", Money("USD", 6))]
    # An amount already refused is not offered to any channel.
    asked.clear()
    refused(pay_input(legs=[LegInput("m1", usd(0), "card", "")]), no_channel)
    assert asked == []


def test_violations_raise_only_when_there_are_some() -> None:
    v = Violations()
    v.raise_if_any()
    v.add("f", "bad")
    with pytest.raises(InvalidRequest) as error:
        v.raise_if_any()
    assert error.value.violations == [FieldViolation("f", "bad")]


# -- control totals (pain.001 DecimalNumber) -----------------------------------------


def test_a_control_sum_of_18_digits_is_accepted_and_19_refused() -> None:
    assert parse_control_sum("9" * 18) == Decimal("9" * 18)
    assert parse_control_sum("9" * 19) == "more than 18 digits"
    assert parse_control_sum("1234567890.12345678") == Decimal("1234567890.12345678")
    assert parse_control_sum("1234567890.123456789") == "more than 18 digits"
    # Leading zeros are no digits of the value.
    assert parse_control_sum("000" + "9" * 18) == Decimal("9" * 18)


def test_a_control_sum_of_17_fraction_digits_is_accepted_and_18_refused() -> None:
    assert parse_control_sum("0." + "1" * 17) == Decimal("0." + "1" * 17)
    assert parse_control_sum("0." + "1" * 18) == "18 digits after the point; at most 17"
    assert parse_control_sum("1." + "1" * 17) == Decimal("1." + "1" * 17)  # 18 in all
    assert parse_control_sum("12." + "1" * 17) == "more than 18 digits"


@pytest.mark.parametrize("text", ["", "1.", ".5", "-1", "+1", "1e3", " 1", "1,5", "1.2.3"])
def test_a_control_sum_is_a_plain_decimal(text) -> None:
    assert parse_control_sum(text) == (
        f"{text!r} is not a plain decimal like 1250.50 (digits, one optional point)")


def test_a_bad_control_sum_is_quoted_up_to_40_characters() -> None:
    text = "x" * 39 + "yz"
    assert parse_control_sum(text).startswith(repr("x" * 39 + "y") + " is not")


def test_amounts_count_in_major_units_by_the_clients_exponent_first() -> None:
    assert major_units(MoneyInput("EUR", 1_250, None)) == Decimal("12.50")
    assert major_units(MoneyInput("JPY", 300, None)) == Decimal(300)
    assert major_units(MoneyInput("KWD", 1_234, None)) == Decimal("1.234")
    assert major_units(MoneyInput("USD", 1_250, 3)) == Decimal("1.250")
    assert major_units(MoneyInput("USD", 1_250, 0)) == Decimal(1_250)
    assert major_units(MoneyInput("QQQ", 7, None)) == Decimal(7)  # unknown, no exponent
    # Any exponent a client sends (a uint32) stays in Decimal's range: past
    # 18 it counts as 18, beyond what any valid control sum can show.
    assert major_units(MoneyInput("USD", 5, 18)) == Decimal("5E-18")
    assert major_units(MoneyInput("USD", 5, 4_294_967_295)) == Decimal("5E-18")
    assert major_units(MoneyInput("USD", 5, 17)) == Decimal("5E-17")


def test_a_tally_counts_every_item_and_sums_exactly() -> None:
    tally = ControlTally()
    assert (tally.item_count, tally.amount_sum) == (0, Decimal(0))
    tally.add(None)  # an item without an amount still counts
    assert (tally.item_count, tally.amount_sum) == (1, Decimal(0))
    # 29 significant digits: a 28-digit context would round this sum.
    tally.add(MoneyInput("USD", 10**15, 0))
    tally.add(MoneyInput("USD", 1, 13))
    assert tally.amount_sum == Decimal("1000000000000000.0000000000001")
    assert tally.item_count == 3


def test_declared_totals_are_held_against_the_tally() -> None:
    tally = ControlTally()
    for amount in (MoneyInput("EUR", 1_250, None), MoneyInput("EUR", 5, None),
                   MoneyInput("JPY", 300, None)):
        tally.add(amount)
    assert tally.mismatches(ControlTotals(3, Decimal("312.55"))) == []
    assert tally.mismatches(ControlTotals(None, None)) == []
    assert tally.mismatches(ControlTotals(4, None)) == ["declared 4 transactions, received 3"]
    assert tally.mismatches(ControlTotals(None, Decimal("312.56"))) == [
        "declared a control sum of 312.56, received 312.55"]
    assert tally.mismatches(ControlTotals(2, Decimal("1"))) == [
        "declared 2 transactions, received 3", "declared a control sum of 1, received 312.55"]
