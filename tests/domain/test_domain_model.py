"""The domain's value types on their own: money, currencies, fingerprints,
errors, payments, refunds and batches. Fast, so scripts/mutation can run
them once per mutant."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path

import pytest

from paygrid_server.domain.model.batch import (
    Batch,
    BatchGroup,
    BatchHeader,
    BatchItem,
    BatchItemStatus,
    BatchStatus,
    FailurePolicy,
    GroupingPolicy,
    ItemResult,
)
from paygrid_server.domain.model.control_totals import ControlTotals
from paygrid_server.domain.model.currencies import MINOR_UNITS, minor_units
from paygrid_server.domain.model.errors import (
    DeadlineTooShort,
    FieldViolation,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    RequestInProgress,
)
from paygrid_server.domain.model.fingerprint import fingerprint
from paygrid_server.domain.model.content_fingerprint import content_fingerprint
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import (
    Failure,
    FailureReason,
    Leg,
    LegRequest,
    LegStatus,
    Payment,
    PaymentMode,
    PaymentRequest,
    PaymentStatus,
)
from paygrid_server.domain.model.refund import (
    Refund,
    RefundLeg,
    RefundLegRequest,
    RefundRequest,
    RefundStatus,
)

ISO_NON_TWO = Path(__file__).parent / "data" / "iso4217_non_two_minor_units.txt"


def non_two_digit_currencies() -> dict[str, int]:
    entries = [line.split() for line in ISO_NON_TWO.read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    return {code: int(digits) for code, digits in entries}


# -- money and currencies --------------------------------------------------


def test_money_is_integer_minor_units_and_says_so() -> None:
    assert str(Money("JPY", 300)) == "300 JPY (minor units)"
    with pytest.raises(AssertionError):
        Money("USD", 12.5)  # type: ignore[arg-type]
    with pytest.raises(AssertionError):
        Money("USD", True)  # type: ignore[arg-type]


def test_every_exponent_agrees_with_an_independent_copy_of_iso_4217() -> None:
    # The data file was written from ISO 4217 list one, not from the code:
    # each currency not in it has 2 digits.
    non_two = non_two_digit_currencies()
    assert len(non_two) == 26
    for code, digits in non_two.items():
        assert minor_units(code) == digits, code
    wrong = {code: exponent for code, exponent in MINOR_UNITS.items()
             if exponent != non_two.get(code, 2)}
    assert wrong == {}
    for code in ("USD", "EUR", "GBP", "CHF", "CNY", "INR", "MXN", "SEK", "ZAR"):
        assert minor_units(code) == 2, code
    assert len(MINOR_UNITS) > 150  # every active code, not a sample


@pytest.mark.parametrize("code", ["XAU", "XAG", "XDR", "XTS", "XXX", "usd", "US", "", "EURO"])
def test_codes_without_a_minor_unit_or_not_iso_are_not_payable(code) -> None:
    assert minor_units(code) is None


# -- fingerprints ---------------------------------------------------------


def test_a_fingerprint_is_the_sha256_of_a_canonical_json() -> None:
    # Stored digests must stay comparable across versions: the canonical
    # form (sorted keys, no spaces, UTF-8 as is) is part of the contract.
    body = {"payee": "Zoë", "amount": 1_250, "tags": ["a", None]}
    canonical = '{"amount":1250,"payee":"Zoë","tags":["a",null]}'
    assert fingerprint(body) == hashlib.sha256(canonical.encode()).hexdigest()


def test_a_fingerprint_ignores_the_order_of_a_map() -> None:
    assert fingerprint({"a": 1, "b": {"x": 1, "y": 2}}) == \
        fingerprint({"b": {"y": 2, "x": 1}, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert fingerprint(["a", "b"]) != fingerprint(["b", "a"])  # lists keep their order


def test_a_content_fingerprint_is_the_fingerprint_of_its_list() -> None:
    # Batch items' content digests (PostgreSQL still stores them, for
    # replicas of earlier releases) were taken with fingerprint(): a resent
    # item must match them, whatever its strings hold.
    for payee in ("Zoë", 'quote " and \\ backslash', "tab\tnew\nline\x00", "€ 😀 \u2028", ""):
        for channel, at_us in (("", None), ("card", 1_733_222_222_000_000), ("b/ü", 0),
                               ("card", -1)):
            for amount in (1_250, 0, -7, 10**18):
                values = [payee, "EUR", amount, channel, at_us]
                assert content_fingerprint(*values) == fingerprint(values), values
    assert content_fingerprint("a", "EUR", 10**18, "", None) != \
        content_fingerprint("a", "EUR", 10**18 + 1, "", None)


# -- errors ---------------------------------------------------------------


def test_errors_carry_what_the_transport_maps_to_a_status() -> None:
    violations = [FieldViolation("legs[0].payee", "required"), FieldViolation("payer", "bad")]
    invalid = InvalidRequest(violations)
    assert invalid.violations == violations
    assert str(invalid) == "legs[0].payee: required; payer: bad"
    with pytest.raises(AssertionError):
        InvalidRequest([])

    missing = NotFound("payment", "pay_1")
    assert (missing.kind, missing.ident, str(missing)) == (
        "payment", "pay_1", "payment 'pay_1' not found")

    conflict = IdempotencyConflict("k1")
    assert conflict.key == "k1"
    assert str(conflict).startswith("idempotency key 'k1' was already used")

    busy = RequestInProgress("k2", 250)
    assert (busy.key, busy.retry_after_ms) == ("k2", 250)
    assert str(busy) == ("a request with idempotency key 'k2' is still in progress; "
                         "retry in 250 ms to get its result")
    assert "with batch 'b1'" in str(RequestInProgress("b1", 5, subject="batch"))

    failed = PreconditionFailed("refund", "REFUND_EXCEEDS_CAPTURED", "too much")
    assert (failed.subject, failed.kind, str(failed)) == (
        "refund", "REFUND_EXCEEDS_CAPTURED", "too much")

    short = DeadlineTooShort(12, 50)
    assert (short.deadline_ms, short.minimum_ms) == (12, 50)
    assert "had 12 ms left" in str(short) and "minimum accepted is 50 ms" in str(short)


# -- payments ---------------------------------------------------------------


def leg_request(payee="m1", amount=1_000, currency="USD", channel="", reference="r") -> LegRequest:
    return LegRequest(payee, Money(currency, amount), channel, reference)


def payment_request(**changes) -> PaymentRequest:
    fields = dict(idempotency_key="k", payer="p", legs=(leg_request(),),
                  mode=PaymentMode.ALL_OR_NOTHING, metadata={"a": "1", "b": "2"})
    return PaymentRequest(**(fields | changes))


def test_states_that_are_final_and_settled() -> None:
    assert [s for s in PaymentStatus if not s.is_final] == [PaymentStatus.PROCESSING]
    assert {s for s in LegStatus if s.is_settled} == {
        LegStatus.SUCCEEDED, LegStatus.FAILED, LegStatus.VOIDED}
    assert {s for s in BatchItemStatus if s.is_final} == {
        BatchItemStatus.SUCCEEDED, BatchItemStatus.FAILED, BatchItemStatus.REJECTED}


def test_a_payment_fingerprint_covers_the_body_but_not_the_key() -> None:
    base = payment_request().fingerprint()
    assert payment_request(idempotency_key="other").fingerprint() == base
    # A replay whose metadata map arrives in another order is the same request.
    assert payment_request(metadata={"b": "2", "a": "1"}).fingerprint() == base
    changed = [payment_request(payer="q"), payment_request(mode=PaymentMode.INDEPENDENT),
               payment_request(metadata={"a": "1"}),
               payment_request(legs=(leg_request(payee="m2"),)),
               payment_request(legs=(leg_request(amount=1_001),)),
               payment_request(legs=(leg_request(currency="EUR"),)),
               payment_request(legs=(leg_request(channel="card"),)),
               payment_request(legs=(leg_request(reference="s"),)),
               payment_request(legs=(leg_request(), leg_request()))]
    digests = {request.fingerprint() for request in changed}
    assert base not in digests and len(digests) == len(changed)


def test_a_leg_is_refundable_only_once_captured_and_only_what_is_left() -> None:
    leg = Leg(0, leg_request(amount=1_000))
    assert (leg.status, leg.attempts, leg.latency_us, leg.refunded_minor,
            leg.refund_pending_minor) == (LegStatus.PENDING, 0, 0, 0, 0)
    assert leg.refundable_minor == 0
    leg.status = LegStatus.SUCCEEDED
    assert leg.refundable_minor == 1_000
    leg.refunded_minor = 300
    leg.refund_pending_minor = 200
    assert leg.refundable_minor == 500
    leg.status = LegStatus.VOIDED
    assert leg.refundable_minor == 0


def test_each_leg_has_one_channel_key_for_every_retry() -> None:
    payment = Payment("pay_1", "t", "k", "fp", "p", PaymentMode.INDEPENDENT, [], {}, 0)
    assert payment.status is PaymentStatus.PROCESSING and payment.completed_at_us is None
    assert (payment.channel_key(0), payment.channel_key(3)) == ("pay_1.0", "pay_1.3")


# -- refunds ----------------------------------------------------------------


def refund_with(*statuses: RefundStatus) -> Refund:
    legs = [RefundLeg(i, Money("USD", 100), "card", status) for i, status in enumerate(statuses)]
    return Refund("re_1", "pay_1", "k", "fp", "", legs, 0)


@pytest.mark.parametrize("statuses, expected", [
    ((RefundStatus.SUCCEEDED, RefundStatus.SUCCEEDED), RefundStatus.SUCCEEDED),
    ((RefundStatus.FAILED, RefundStatus.FAILED), RefundStatus.FAILED),
    ((RefundStatus.SUCCEEDED, RefundStatus.FAILED), RefundStatus.PARTIALLY_SUCCEEDED),
    ((RefundStatus.SUCCEEDED, RefundStatus.PENDING), RefundStatus.PENDING),
    ((RefundStatus.FAILED, RefundStatus.PENDING), RefundStatus.PENDING),
    ((RefundStatus.SUCCEEDED,), RefundStatus.SUCCEEDED),
    ((RefundStatus.FAILED,), RefundStatus.FAILED),
])
def test_a_refund_status_follows_its_legs(statuses, expected) -> None:
    refund = refund_with(*statuses)
    assert refund.status is RefundStatus.PENDING  # until settled
    refund.settle_status()
    assert refund.status is expected


def test_a_refund_status_comes_back_to_pending_when_a_leg_is_pending_again() -> None:
    refund = refund_with(RefundStatus.SUCCEEDED, RefundStatus.SUCCEEDED)
    refund.settle_status()
    refund.legs[1].status = RefundStatus.PENDING
    refund.settle_status()
    assert refund.status is RefundStatus.PENDING


def test_a_refund_fingerprint_and_channel_keys() -> None:
    refund = refund_with(RefundStatus.PENDING)
    assert refund.channel_key(2) == "re_1.2"

    def request(legs, reason="dup", payment_id="pay_1", key="k") -> RefundRequest:
        return RefundRequest(payment_id, key, tuple(legs), reason)

    whole = RefundLegRequest(0, None)
    part = RefundLegRequest(0, Money("USD", 50))
    base = request([whole]).fingerprint()
    assert request([whole], key="other").fingerprint() == base
    digests = {request([part]).fingerprint(), request([RefundLegRequest(1, None)]).fingerprint(),
               request([whole], reason="other").fingerprint(),
               request([RefundLegRequest(0, Money("EUR", 50))]).fingerprint(),
               request([whole, RefundLegRequest(1, None)]).fingerprint()}
    assert base not in digests and len(digests) == 5


# -- batches ----------------------------------------------------------------


def batch_header(**changes) -> BatchHeader:
    fields = dict(batch_id="b", payer="p", grouping=GroupingPolicy.CHANNEL_AND_CURRENCY,
                  max_group_size=100, parallelism=4)
    return BatchHeader(**(fields | changes))


def test_a_batch_fingerprint_is_its_content_not_how_it_runs() -> None:
    base = batch_header()
    assert base.control is None and base.failure_policy is FailurePolicy.CONTINUE
    # Digests stored before failure policies existed must still match.
    assert base.fingerprint() == fingerprint(["p", "CHANNEL_AND_CURRENCY"])
    assert batch_header(max_group_size=7, parallelism=1, batch_id="c").fingerprint() == \
        base.fingerprint()
    stop = batch_header(failure_policy=FailurePolicy.STOP_ON_FIRST_FAILURE)
    assert stop.fingerprint() == fingerprint(["p", "CHANNEL_AND_CURRENCY",
                                              "STOP_ON_FIRST_FAILURE"])
    totals = batch_header(control=ControlTotals(3, Decimal("312.550")))
    assert totals.fingerprint() == fingerprint(["p", "CHANNEL_AND_CURRENCY", 3, "312.55"])
    count_only = batch_header(control=ControlTotals(3, None))
    assert count_only.fingerprint() == fingerprint(["p", "CHANNEL_AND_CURRENCY", 3, None])
    assert batch_header(grouping=GroupingPolicy.CHANNEL).fingerprint() != base.fingerprint()
    assert batch_header(payer="q").fingerprint() != base.fingerprint()


def test_a_new_batch_has_no_earlier_wall_time() -> None:
    # Wall time adds up over submissions: a new batch starts from zero.
    batch = Batch("t", "b", "u", batch_header(), "fp", BatchStatus.RECEIVING, 1, 0)
    assert (batch.wall_us_before, batch.submission_started_at_us, batch.completed_at_us) == (
        0, 0, None)


def batch_item(**changes) -> BatchItem:
    fields = dict(seq=7, reference="r7", payee="m", amount=Money("EUR", 100),
                  requested_channel="", requested_at_us=None, channel="card")
    return BatchItem(**(fields | changes))


def test_a_batch_item_content_key_and_result() -> None:
    item = batch_item()
    assert (item.status, item.attempt, item.group_no) == (BatchItemStatus.RECEIVED, 1, 0)
    assert item.channel_key("u1") == "u1.7.1"
    item.attempt = 2
    assert item.channel_key("u1") == "u1.7.2"
    assert item.content() == ("m", Money("EUR", 100), "", None)
    # Where it is charged is not content: routing may differ on resubmission.
    assert batch_item(channel="wallet", seq=9, reference="r9").content() == item.content()
    for changed in (dict(payee="n"), dict(amount=Money("EUR", 101)),
                    dict(amount=Money("USD", 100)), dict(requested_channel="card"),
                    dict(requested_at_us=5), dict(requested_at_us=0)):
        assert batch_item(**changed).content() != item.content(), changed
    item.group_no = 3
    item.channel_reference = "ch_1"
    item.failure = Failure(FailureReason.DECLINED, "no")
    assert item.result() == ItemResult("r7", BatchItemStatus.RECEIVED, "card", "ch_1",
                                       Failure(FailureReason.DECLINED, "no"), 3)


def test_a_group_times_its_processing() -> None:
    group = BatchGroup(1, "card/EUR")
    assert (group.items, group.started_at_us, group.completed_at_us) == ([], 0, 0)
    group.started_at_us, group.completed_at_us = 1_000, 1_750
    assert group.processing_us == 750
    assert ItemResult("r", BatchItemStatus.FAILED).group_no == 0
