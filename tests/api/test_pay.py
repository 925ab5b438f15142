"""Pay end to end: a real server, real channel simulators, a real SQLite file."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest

from paygrid.v1 import payment_service_pb2 as pb
from paygrid_server.domain.model import limits
from paygrid_server.domain.charging.circuit_breaker import BreakerState
from paygrid_server.domain.model.errors import DeadlineTooShort
from paygrid_server.domain.payments.payment_service import payment_budget_ms
from paygrid_server.domain.ports.payment_channel import ChargeStatus
from tests.conftest import channel, leg, pay_request, rich_status, slow, TEST_CHANNELS
from tests.support.server_process import wait_for

S = pb  # enum values read better as S.LEG_STATUS_...


async def test_single_leg_is_charged_persisted_and_timed(paygrid) -> None:
    response = await paygrid.stub.Pay(pay_request("k1", leg(reference="order 42")), timeout=5)
    payment = response.payment
    assert payment.status == S.PAYMENT_STATUS_SUCCEEDED
    assert payment.mode == S.PAYMENT_MODE_ALL_OR_NOTHING
    [result] = payment.legs
    assert result.status == S.LEG_STATUS_SUCCEEDED
    assert result.channel == "card"  # USD, cheapest eligible channel
    assert result.attempts == 1
    charge = paygrid.ledger("card").get(f"{payment.payment_id}.0")
    assert result.channel_reference == charge.charge_id
    assert charge.amount.amount_minor == 1_000 and charge.amount.currency == "USD"
    assert payment.timing.received_at.ToMicroseconds() > 0
    assert payment.timing.completed_at.ToMicroseconds() >= payment.timing.received_at.ToMicroseconds()
    assert payment.timing.processing_time.ToMicroseconds() == (
        payment.timing.completed_at.ToMicroseconds() - payment.timing.received_at.ToMicroseconds())
    assert result.latency.ToMicroseconds() > 0

    # Acknowledged means on disk: another connection to the file sees it.
    assert paygrid.rows("SELECT status FROM payments WHERE payment_id = ?",
                        (payment.payment_id,)) == [("SUCCEEDED",)]
    if paygrid.engine == "sqlite":
        assert paygrid.rows("PRAGMA journal_mode") == [("wal",)]
    fetched = await paygrid.stub.GetPayment(pb.GetPaymentRequest(payment_id=payment.payment_id))
    assert fetched.payment == payment


async def test_payment_ids_are_time_ordered_uuid7s(paygrid) -> None:
    # Time-ordered ids keep the payment tables' index inserts on their
    # right-hand pages (domain/model/time_ordered_ids.py): an id carries the
    # millisecond it was made in, so a later millisecond's id sorts after.
    before_ms = time.time_ns() // 1_000_000
    first = (await paygrid.stub.Pay(pay_request("k-id-1", leg()), timeout=5)).payment.payment_id
    after_ms = time.time_ns() // 1_000_000
    assert first.startswith("pay_") and len(first) == 4 + 32
    parsed = uuid.UUID(hex=first[4:])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before_ms <= parsed.int >> 80 <= after_ms
    # The next millisecond's id is made for sure, not waited for by chance.
    while time.time_ns() // 1_000_000 <= after_ms:
        await asyncio.sleep(0.001)
    second = (await paygrid.stub.Pay(pay_request("k-id-2", leg()), timeout=5)).payment.payment_id
    assert second > first


async def test_legs_are_charged_concurrently(paygrid) -> None:
    # The channel holds every charge until released: all three legs are at
    # the channel at once only if they were dispatched together (one at a
    # time, the second would never be sent while the first is held).
    card = paygrid.simulator("card")
    card.faults.hold_charges()
    paying = asyncio.ensure_future(paygrid.stub.Pay(
        pay_request("k3", *(leg(f"merchant_{i:04d}") for i in range(3))), timeout=60))
    await asyncio.wait_for(card.faults.held(3), 30)
    assert not paying.done()
    card.faults.release_charges()
    response = await paying
    assert response.payment.status == S.PAYMENT_STATUS_SUCCEEDED
    assert card.peak_charges_in_progress == 3


async def test_all_or_nothing_voids_charged_legs_when_one_declines(paygrid) -> None:
    request = pay_request("k-aon", leg("hotel_0001"), leg("decline_insufficient_funds"),
                          leg("flight_0001", "EUR", 5_000))
    payment = (await paygrid.stub.Pay(request, timeout=5)).payment
    assert payment.status == S.PAYMENT_STATUS_FAILED
    assert payment.failure.reason == "INSUFFICIENT_FUNDS"
    assert payment.failure.decline_code == "insufficient_funds"
    assert "leg 1" in payment.failure.message
    assert [l.status for l in payment.legs] == [
        S.LEG_STATUS_VOIDED, S.LEG_STATUS_FAILED, S.LEG_STATUS_VOIDED]
    assert payment.legs[0].failure.reason == "OTHER_LEG_FAILED"
    assert paygrid.captured_everywhere() == []  # nothing stays charged
    ledger = paygrid.ledger("card")
    assert ledger.get(f"{payment.payment_id}.0").status is ChargeStatus.VOIDED
    assert ledger.get(f"{payment.payment_id}.1").status is ChargeStatus.DECLINED


async def test_independent_mode_keeps_each_legs_outcome(paygrid) -> None:
    request = pay_request("k-ind", leg("hotel_0001"), leg("decline_card_expired"),
                          mode=S.PAYMENT_MODE_INDEPENDENT)
    payment = (await paygrid.stub.Pay(request, timeout=5)).payment
    assert payment.status == S.PAYMENT_STATUS_PARTIALLY_SUCCEEDED
    assert [l.status for l in payment.legs] == [S.LEG_STATUS_SUCCEEDED, S.LEG_STATUS_FAILED]
    assert payment.legs[1].failure.decline_code == "card_expired"
    assert len(paygrid.captured_everywhere()) == 1


async def test_independent_mode_with_every_leg_declined_fails(paygrid) -> None:
    request = pay_request("k-ind2", leg("decline_a"), leg("decline_b"),
                          mode=S.PAYMENT_MODE_INDEPENDENT)
    payment = (await paygrid.stub.Pay(request, timeout=5)).payment
    assert payment.status == S.PAYMENT_STATUS_FAILED


@pytest.mark.parametrize(("currency", "amount", "expected"), [
    ("USD", 1_000, "card"),             # everyone takes it; card is cheapest
    ("CHF", 1_000, "bank_transfer"),    # only the bank takes CHF
])
async def test_routing_by_currency(paygrid, currency, amount, expected) -> None:
    payment = (await paygrid.stub.Pay(pay_request("k-r", leg(currency=currency,
                                                             amount_minor=amount)))).payment
    assert payment.legs[0].channel == expected


async def test_routing_by_amount_limit(start_paygrid) -> None:
    # Without card, USD goes to the wallet up to its limit and nowhere above it.
    paygrid = await start_paygrid(TEST_CHANNELS[1:])
    ok = (await paygrid.stub.Pay(pay_request("k-a1", leg(amount_minor=100_000)))).payment
    assert ok.legs[0].channel == "wallet"
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.Pay(pay_request("k-a2", leg(amount_minor=100_001)))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [violation] = rich_status(error.value)["BadRequest"].field_violations
    assert violation.field == "legs[0].amount"
    assert "no channel accepts" in violation.description


async def test_routed_leg_fails_over_when_a_channel_is_down(start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card", target="127.0.0.1:1"), *TEST_CHANNELS[1:]))
    payment = (await paygrid.stub.Pay(pay_request("k-fo", leg()), timeout=5)).payment
    assert payment.status == S.PAYMENT_STATUS_SUCCEEDED
    assert payment.legs[0].channel == "wallet"
    assert payment.legs[0].attempts == 3  # two tries at card, one at wallet


async def test_failover_after_timeout_fences_the_slow_channel(start_paygrid) -> None:
    # card holds the charge but paygrid waits 200 ms: the outcome at card is
    # unknown, so it is fenced (Void) before the wallet is charged.
    paygrid = await start_paygrid((channel("card", timeout_ms=200), *TEST_CHANNELS[1:]))
    card = paygrid.simulator("card")
    card.faults.hold_charges()
    payment = (await paygrid.stub.Pay(pay_request("k-to", leg()), timeout=5)).payment
    assert payment.status == S.PAYMENT_STATUS_SUCCEEDED
    assert payment.legs[0].channel == "wallet"
    key = f"{payment.payment_id}.0"
    assert card.faults.charges_held == 1
    # The late charge reaches card now, and only after it has landed (or been
    # refused) is the ledger read: the fence must have refused it.
    card.faults.release_charges()
    await card.finish_late_work()
    assert card.ledger.charge_requests == {key: 1}
    assert paygrid.ledger("card").get(key).status is ChargeStatus.VOIDED
    assert [c.idempotency_key for c in paygrid.captured_everywhere()] == [key]


async def test_flaky_channel_is_retried_with_the_same_key(paygrid) -> None:
    payment = (await paygrid.stub.Pay(pay_request("k-fl", leg("flaky_merchant", channel="card")),
                                      timeout=5)).payment
    assert payment.status == S.PAYMENT_STATUS_SUCCEEDED
    assert payment.legs[0].attempts == 2
    assert paygrid.ledger("card").charge_requests == {f"{payment.payment_id}.0": 1}


async def test_channel_that_never_answers_fails_the_leg_and_is_fenced(start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card", timeout_ms=200),))
    payment = (await paygrid.stub.Pay(pay_request("k-tmo", leg("timeout_merchant")),
                                      timeout=5)).payment
    assert payment.status == S.PAYMENT_STATUS_FAILED
    assert payment.legs[0].failure.reason == "CHANNEL_TIMEOUT"
    fence = paygrid.ledger("card").get(f"{payment.payment_id}.0")
    assert fence.status is ChargeStatus.VOIDED and fence.amount is None


async def test_lost_answer_is_settled_by_asking_the_channel(start_paygrid) -> None:
    # The charge happens but its answer never arrives: GetCharge finds it.
    paygrid = await start_paygrid((channel("card", timeout_ms=200),))
    payment = (await paygrid.stub.Pay(pay_request("k-lost", leg("hang_after_charge_m1")),
                                      timeout=5)).payment
    assert payment.status == S.PAYMENT_STATUS_SUCCEEDED
    charge = paygrid.ledger("card").get(f"{payment.payment_id}.0")
    assert charge.status is ChargeStatus.CAPTURED
    assert payment.legs[0].channel_reference == charge.charge_id


async def test_circuit_breaker_stops_calling_a_failing_channel(start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card", target="127.0.0.1:1"), *TEST_CHANNELS[1:]),
                                  breaker_failure_threshold=2, breaker_open_ms=60_000)
    first = (await paygrid.stub.Pay(pay_request("k-b1", leg()), timeout=5)).payment
    assert first.legs[0].attempts == 3
    assert paygrid.app.breakers["card"].state is BreakerState.OPEN
    second = (await paygrid.stub.Pay(pay_request("k-b2", leg()), timeout=5)).payment
    assert second.legs[0].channel == "wallet"
    assert second.legs[0].attempts == 1  # card was not called at all
    pinned = (await paygrid.stub.Pay(pay_request("k-b3", leg(channel="card")), timeout=5)).payment
    assert pinned.status == S.PAYMENT_STATUS_FAILED
    assert pinned.legs[0].failure.reason == "CIRCUIT_OPEN"
    assert pinned.legs[0].attempts == 0


async def test_caller_deadline_bounds_the_legs_and_is_answered_in_time(start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card", simulator=slow(30_000)),))
    payment = (await paygrid.stub.Pay(pay_request("k-dl", leg()), timeout=3.0)).payment
    # The legs got the caller's deadline minus a reserve (300 ms of 3 s), so
    # the answer is a definite FAILED (fenced, nothing charged), not a
    # DEADLINE_EXCEEDED.
    assert payment.status == S.PAYMENT_STATUS_FAILED
    assert payment.legs[0].failure.reason == "CHANNEL_TIMEOUT"
    assert payment.timing.processing_time.ToMilliseconds() < 3_000
    assert paygrid.captured_everywhere() == []


async def test_deadline_too_short_to_start_is_refused_and_nothing_stored(paygrid) -> None:
    # The server's own refusal (its ErrorInfo), not the client giving up: the
    # call has been handled to its end, so whatever it stored is visible now.
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.Pay(pay_request("k-dl2", leg()), timeout=0.049)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert rich_status(error.value)["ErrorInfo"].reason == "DEADLINE_TOO_SHORT"
    assert paygrid.rows("SELECT count(*) FROM payments") == [(0,)]


async def test_a_too_short_deadline_is_told_with_the_deadline_and_the_minimum(paygrid) -> None:
    # Just under the minimum; the refusal is the server's first step, so it
    # answers long before the 49 ms pass.
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.Pay(pay_request("k-dl3", leg()), timeout=0.049)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    info = rich_status(error.value)["ErrorInfo"]
    assert info.reason == "DEADLINE_TOO_SHORT"
    assert info.metadata["minimum_deadline_ms"] == str(limits.MIN_CALL_DEADLINE_MS) == "50"
    received_ms = int(info.metadata["deadline_ms"])
    assert 0 < received_ms <= 49
    assert error.value.details() == (
        f"the call's deadline had {received_ms} ms left when it arrived; the minimum "
        "accepted is 50 ms: call again with a longer deadline")


def test_the_reserve_is_a_tenth_of_the_deadline_and_never_under_30_ms() -> None:
    assert payment_budget_ms(3_000) == 2_700
    assert payment_budget_ms(300) == 270  # exactly where a tenth is 30 ms
    assert payment_budget_ms(299) == 269  # a tenth would be 29.9: the floor holds
    assert payment_budget_ms(1_000_000) == limits.MAX_PAYMENT_BUDGET_MS


def test_the_minimum_deadline_is_accepted_and_just_under_it_is_refused() -> None:
    assert payment_budget_ms(50) == limits.MIN_PAYMENT_BUDGET_MS  # 50 - the 30 ms reserve
    with pytest.raises(DeadlineTooShort) as refused:
        payment_budget_ms(49.9)
    assert (refused.value.deadline_ms, refused.value.minimum_ms) == (49, 50)


async def test_payment_finishes_even_when_the_caller_goes_away(start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card"),))
    card = paygrid.simulator("card")
    card.faults.hold_charges()  # the caller goes away while its charge is at the channel
    call = paygrid.stub.Pay(pay_request("k-gone", leg()))
    await wait_for(lambda: card.faults.charges_held == 1, "the charge to reach the channel")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    card.faults.release_charges()
    # The execution outlives its call; once it has ended its result is stored.
    await paygrid.app.in_flight.drain(timeout_s=10)
    assert len(paygrid.app.in_flight) == 0
    [(payment_id, status)] = paygrid.rows("SELECT payment_id, status FROM payments")
    assert status == "SUCCEEDED"
    replay = (await paygrid.stub.Pay(pay_request("k-gone", leg()))).payment
    assert replay.payment_id == payment_id and replay.status == S.PAYMENT_STATUS_SUCCEEDED
    assert paygrid.ledger("card").charge_requests == {f"{payment_id}.0": 1}


async def test_unknown_payment_is_not_found(paygrid) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.GetPayment(pb.GetPaymentRequest(payment_id="pay_nope"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert rich_status(error.value)["ResourceInfo"].resource_name == "pay_nope"


async def test_list_payments_pages_newest_first(paygrid) -> None:
    ids = [(await paygrid.stub.Pay(pay_request(f"k-l{i}"))).payment.payment_id for i in range(5)]
    seen, token = [], ""
    while True:
        page = await paygrid.stub.ListPayments(pb.ListPaymentsRequest(page_size=2,
                                                                      page_token=token))
        assert len(page.payments) <= 2
        seen += [p.payment_id for p in page.payments]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]


@pytest.mark.parametrize(("request_", "field"), [
    (pb.ListPaymentsRequest(page_token="not-a-token"), "page_token"),
    (pb.ListPaymentsRequest(page_size=-1), "page_size"),
])
async def test_list_payments_rejects_bad_paging(paygrid, request_, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.ListPayments(request_)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_status(error.value)["BadRequest"].field_violations[0].field == field
