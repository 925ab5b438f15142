"""Pay with wait = PAY_WAIT_ACCEPTED (issue 16, Asynchronous Pay): answered
PROCESSING once the payment is stored, the legs run on in the server, and
the outcome is read with GetPayment. The moment "still running" is made by
holding the channel's charges, never by a timing window."""

from __future__ import annotations

import grpc
import pytest

from paygrid.v1 import payment_service_pb2 as pb
from paygrid_server.domain.model import limits
from paygrid_server.domain.model.errors import DeadlineTooShort
from tests.conftest import leg, pay_request, rich_status
from tests.support.ledger_check import assert_books_agree

ACCEPTED = pb.PAY_WAIT_ACCEPTED


async def test_accepted_answers_processing_while_held_then_get_payment_shows_the_outcome(
        paygrid) -> None:
    card = paygrid.simulator("card")
    card.faults.hold_charges()  # the leg cannot end until released
    request = pay_request("k-async", leg("merchant_0001"), leg("merchant_0002"), wait=ACCEPTED)

    accepted = (await paygrid.stub.Pay(request, timeout=10)).payment
    assert accepted.status == pb.PAYMENT_STATUS_PROCESSING
    assert [leg_.status for leg_ in accepted.legs] == [pb.LEG_STATUS_PENDING] * 2
    assert not accepted.timing.HasField("completed_at")
    payment_id = accepted.payment_id
    # Durable when answered: another connection sees the payment and its legs.
    assert paygrid.rows("SELECT status FROM payments WHERE payment_id = ?",
                        (payment_id,)) == [("PROCESSING",)]
    assert paygrid.rows("SELECT count(*) FROM payment_legs") == [(2,)]
    # The call is over; its legs still reach the channel.
    await card.faults.held(calls=2)

    got = (await paygrid.stub.GetPayment(pb.GetPaymentRequest(payment_id=payment_id))).payment
    assert got.status == pb.PAYMENT_STATUS_PROCESSING
    # A same-key retry waiting for acceptance gets the payment as it stands...
    again = (await paygrid.stub.Pay(request, timeout=10)).payment
    assert (again.payment_id, again.status) == (payment_id, pb.PAYMENT_STATUS_PROCESSING)
    # ...one waiting for the final state is told to retry, as for any Pay in progress.
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.Pay(pay_request("k-async", leg("merchant_0001"), leg("merchant_0002")),
                               timeout=10)
    assert error.value.code() == grpc.StatusCode.ABORTED
    assert rich_status(error.value)["ErrorInfo"].reason == "REQUEST_IN_PROGRESS"

    card.faults.release_charges()
    await paygrid.app.in_flight.drain(timeout_s=30)  # the execution has ended
    final = (await paygrid.stub.GetPayment(pb.GetPaymentRequest(payment_id=payment_id))).payment
    assert final.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert [leg_.status for leg_ in final.legs] == [pb.LEG_STATUS_SUCCEEDED] * 2
    assert final.timing.HasField("completed_at")
    assert (await paygrid.stub.Pay(request, timeout=10)).payment == final
    assert card.ledger.charge_requests == {f"{payment_id}.0": 1, f"{payment_id}.1": 1}
    assert paygrid.rows("SELECT count(*) FROM payments") == [(1,)]
    assert_books_agree(paygrid)


async def test_an_accepted_payment_that_fails_ends_failed_with_its_cause(paygrid) -> None:
    card = paygrid.simulator("card")
    card.faults.hold_charges()
    accepted = (await paygrid.stub.Pay(
        pay_request("k-async-decline", leg("decline_merchant", channel="card"), wait=ACCEPTED),
        timeout=10)).payment
    assert accepted.status == pb.PAYMENT_STATUS_PROCESSING
    card.faults.release_charges()
    await paygrid.app.in_flight.drain(timeout_s=30)
    final = (await paygrid.stub.GetPayment(
        pb.GetPaymentRequest(payment_id=accepted.payment_id))).payment
    assert final.status == pb.PAYMENT_STATUS_FAILED
    assert final.legs[0].failure.reason == "DECLINED"
    assert paygrid.captured_everywhere() == []


@pytest.mark.parametrize("wait", [pb.PAY_WAIT_UNSPECIFIED, pb.PAY_WAIT_FINAL])
async def test_wait_final_and_unset_answer_the_final_payment_as_before(paygrid, wait) -> None:
    payment = (await paygrid.stub.Pay(pay_request(f"k-final-{wait}", leg(), wait=wait),
                                      timeout=10)).payment
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert payment.legs[0].status == pb.LEG_STATUS_SUCCEEDED
    assert len(paygrid.ledger("card").captured()) == 1


async def test_the_highest_wait_value_is_accepted_and_one_past_it_is_invalid(paygrid) -> None:
    highest = max(pb.PayWait.values())
    assert highest == ACCEPTED
    accepted = (await paygrid.stub.Pay(pay_request("k-w-ok", leg(), wait=highest),
                                       timeout=10)).payment
    assert accepted.status == pb.PAYMENT_STATUS_PROCESSING

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.Pay(pay_request("k-w-bad", leg(), wait=highest + 1), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [violation] = rich_status(error.value)["BadRequest"].field_violations
    assert violation.field == "wait"
    assert "unknown wait" in violation.description
    await paygrid.app.in_flight.drain(timeout_s=30)
    assert paygrid.rows("SELECT idempotency_key FROM payments") == [("k-w-ok",)]


async def test_an_accepted_pay_reusing_a_key_with_another_body_is_a_conflict(paygrid) -> None:
    await paygrid.stub.Pay(pay_request("k-async-c", leg(amount_minor=100)), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.Pay(pay_request("k-async-c", leg(amount_minor=200), wait=ACCEPTED),
                               timeout=10)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rich_status(error.value)["ErrorInfo"].reason == "IDEMPOTENCY_CONFLICT"
    assert paygrid.rows("SELECT count(*) FROM payments") == [(1,)]


def test_accepted_legs_get_the_budget_of_a_call_without_deadline() -> None:
    # The caller is gone before the legs end: its deadline must only suffice
    # to store the payment and answer (the same minimum as any Pay).
    # Imported here: the API tests above also run against code without it.
    from paygrid_server.domain.model.request_validation import PayWait
    from paygrid_server.domain.payments.payment_service import legs_budget_ms

    minimum = limits.MIN_CALL_DEADLINE_MS
    assert legs_budget_ms(PayWait.ACCEPTED, minimum) == limits.DEFAULT_PAYMENT_BUDGET_MS
    assert legs_budget_ms(PayWait.ACCEPTED, None) == limits.DEFAULT_PAYMENT_BUDGET_MS
    with pytest.raises(DeadlineTooShort):
        legs_budget_ms(PayWait.ACCEPTED, minimum - 0.1)
    assert legs_budget_ms(PayWait.FINAL, minimum) == limits.MIN_PAYMENT_BUDGET_MS


async def test_accepted_payments_running_are_limited_exactly_at_the_limit(start_paygrid) -> None:
    # Their calls have ended, so max_concurrent_calls no longer bounds them.
    paygrid = await start_paygrid(max_accepted_payments=2)
    card = paygrid.simulator("card")
    card.faults.hold_charges()  # both stay running until released
    for i in range(2):  # exactly at the limit: accepted
        accepted = (await paygrid.stub.Pay(pay_request(f"k-lim-{i}", leg(f"merchant_{i}"),
                                                       wait=ACCEPTED), timeout=10)).payment
        assert accepted.status == pb.PAYMENT_STATUS_PROCESSING
    with pytest.raises(grpc.aio.AioRpcError) as error:  # one past it: refused, nothing stored
        await paygrid.stub.Pay(pay_request("k-lim-2", leg("merchant_2"), wait=ACCEPTED),
                               timeout=10)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = rich_status(error.value)
    assert details["ErrorInfo"].reason == "OVERLOADED"
    assert details["ErrorInfo"].metadata["limit"] == "accepted_payments"
    assert details["RetryInfo"].retry_delay.ToMilliseconds() > 0
    assert paygrid.rows("SELECT count(*) FROM payments") == [(2,)]

    card.faults.release_charges()
    await paygrid.app.in_flight.drain(timeout_s=30)
    again = (await paygrid.stub.Pay(pay_request("k-lim-2", leg("merchant_2"), wait=ACCEPTED),
                                    timeout=10)).payment
    assert again.status == pb.PAYMENT_STATUS_PROCESSING
    await paygrid.app.in_flight.drain(timeout_s=30)
    assert paygrid.rows("SELECT status, count(*) FROM payments GROUP BY status") == [
        ("SUCCEEDED", 3)]
