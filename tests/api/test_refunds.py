"""Refunds: full or partial, never more than captured, idempotent."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from paygrid.v1 import payment_service_pb2 as pb
from paygrid_server.transport.event_messages import ProtobufSnapshots
from paygrid_server.api_keys import DEV_TENANT
from paygrid_server.domain.model import limits
from paygrid_server.domain.model.errors import DeadlineTooShort
from paygrid_server.domain.model.refund import RefundStatus
from paygrid_server.domain.payments.refund_service import RefundInput, RefundService
from paygrid_server.domain.payments_first import PaymentsFirst
from paygrid_server.storage.postgres.payment_store import PostgresPaymentStore
from paygrid_server.storage.sqlite.payment_store import SqlitePaymentStore
from tests.conftest import leg, money, pay_request, rich_status
from tests.support.ledger_check import assert_books_agree


async def _paid(paygrid, key="k-pay", *legs):
    payment = (await paygrid.stub.Pay(pay_request(key, *(legs or (leg(amount_minor=1_000),))))).payment
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    return payment


def _refund(payment_id, key, *legs, reason=""):
    return pb.RefundPaymentRequest(payment_id=payment_id, idempotency_key=key, legs=list(legs),
                                   reason=reason)


async def test_full_refund_of_every_leg(paygrid) -> None:
    payment = await _paid(paygrid, "k-f", leg(amount_minor=1_000), leg("m2", "EUR", 300))
    response = await paygrid.stub.RefundPayment(_refund(payment.payment_id, "r1"))
    assert response.refund.status == pb.REFUND_STATUS_SUCCEEDED
    assert [(l.leg_index, l.amount.amount_minor) for l in response.refund.legs] == [(0, 1_000),
                                                                                   (1, 300)]
    assert [l.refunded_amount_minor for l in response.payment.legs] == [1_000, 300]
    ledger = paygrid.ledger("card")
    assert ledger.get(f"{payment.payment_id}.0").refunded_minor == 1_000
    assert ledger.get(f"{payment.payment_id}.1").refunded_minor == 300
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.RefundPayment(_refund(payment.payment_id, "r2"))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rich_status(error.value)["ErrorInfo"].reason == "NOTHING_TO_REFUND"


async def test_partial_refunds_never_exceed_the_capture(paygrid) -> None:
    payment = await _paid(paygrid)
    part = pb.RefundLeg(leg_index=0, amount=money("USD", 400))
    first = await paygrid.stub.RefundPayment(_refund(payment.payment_id, "p1", part))
    second = await paygrid.stub.RefundPayment(_refund(payment.payment_id, "p2", part))
    assert second.payment.legs[0].refunded_amount_minor == 800
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.RefundPayment(_refund(payment.payment_id, "p3", part))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rich_status(error.value)["ErrorInfo"].reason == "REFUND_EXCEEDS_CAPTURED"
    rest = await paygrid.stub.RefundPayment(_refund(payment.payment_id, "p4",
                                                    pb.RefundLeg(leg_index=0)))
    assert rest.refund.legs[0].amount.amount_minor == 200
    assert rest.payment.legs[0].refunded_amount_minor == 1_000
    assert first.refund.refund_id != second.refund.refund_id
    assert paygrid.ledger("card").get(f"{payment.payment_id}.0").refunded_minor == 1_000


async def test_refund_replay_returns_the_first_refund_and_refunds_once(paygrid) -> None:
    payment = await _paid(paygrid)
    request = _refund(payment.payment_id, "r-same", pb.RefundLeg(leg_index=0,
                                                                 amount=money("USD", 100)))
    first = await paygrid.stub.RefundPayment(request)
    replay = await paygrid.stub.RefundPayment(request)
    assert replay.refund == first.refund
    assert replay.payment.legs[0].refunded_amount_minor == 100
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.RefundPayment(_refund(payment.payment_id, "r-same", pb.RefundLeg(
            leg_index=0, amount=money("USD", 101))))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rich_status(error.value)["ErrorInfo"].reason == "IDEMPOTENCY_CONFLICT"


CONCURRENT_REFUNDS = 64


async def test_concurrent_refunds_never_exceed_the_capture(paygrid) -> None:
    # 64 partial refunds of 30 against a capture of 1000: together 1920.
    payment = await _paid(paygrid)
    part = pb.RefundLeg(leg_index=0, amount=money("USD", 30))
    results = await asyncio.gather(*(
        paygrid.stub.RefundPayment(_refund(payment.payment_id, f"c{i}", part), timeout=30)
        for i in range(CONCURRENT_REFUNDS)), return_exceptions=True)
    ok = [r for r in results if isinstance(r, pb.RefundPaymentResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 33 and len(ok) + len(refused) == CONCURRENT_REFUNDS
    assert {r.refund.status for r in ok} == {pb.REFUND_STATUS_SUCCEEDED}
    assert {e.code() for e in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert {rich_status(e)["ErrorInfo"].reason for e in refused} == {"REFUND_EXCEEDS_CAPTURED"}
    assert paygrid.ledger("card").get(f"{payment.payment_id}.0").refunded_minor == 990
    assert len(paygrid.ledger("card").refunds) == 33
    assert paygrid.rows("SELECT refunded_minor, refund_pending_minor FROM payment_legs") == [
        (990, 0)]
    assert_books_agree(paygrid)


async def test_refunds_that_cannot_be_made(paygrid) -> None:
    failed = (await paygrid.stub.Pay(pay_request("k-dec", leg("decline_x")))).payment
    ok = await _paid(paygrid, "k-ok")
    cases = [
        (_refund("pay_missing", "r"), grpc.StatusCode.NOT_FOUND, None),
        (_refund(failed.payment_id, "r"), grpc.StatusCode.FAILED_PRECONDITION, "payment_id"),
        (_refund(ok.payment_id, ""), grpc.StatusCode.INVALID_ARGUMENT, "idempotency_key"),
        (_refund(ok.payment_id, "r", pb.RefundLeg(leg_index=0, amount=money("EUR", 10))),
         grpc.StatusCode.INVALID_ARGUMENT, "legs[0].amount.currency"),
        (_refund(ok.payment_id, "r", pb.RefundLeg(leg_index=0, amount=money("USD", 0))),
         grpc.StatusCode.INVALID_ARGUMENT, "legs[0].amount.amount_minor"),
        (_refund(ok.payment_id, "r", pb.RefundLeg(leg_index=5)),
         grpc.StatusCode.INVALID_ARGUMENT, "legs[0].leg_index"),
        (_refund(ok.payment_id, "r", pb.RefundLeg(leg_index=0), pb.RefundLeg(leg_index=0)),
         grpc.StatusCode.INVALID_ARGUMENT, "legs[1].leg_index"),
    ]
    for request, code, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await paygrid.stub.RefundPayment(request)
        assert error.value.code() == code, (request, error.value.details())
        details = rich_status(error.value)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert field in [v.field for v in details["BadRequest"].field_violations]
        elif code == grpc.StatusCode.FAILED_PRECONDITION:
            assert details["PreconditionFailure"].violations[0].subject == field
    assert paygrid.rows("SELECT count(*) FROM refunds") == [(0,)]


async def test_a_refund_with_a_too_short_deadline_is_refused_and_nothing_stored(paygrid) -> None:
    payment = await _paid(paygrid, "k-rdl")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.RefundPayment(_refund(payment.payment_id, "r-dl"), timeout=0.04)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    info = rich_status(error.value)["ErrorInfo"]
    assert info.reason == "DEADLINE_TOO_SHORT"
    assert info.metadata["minimum_deadline_ms"] == str(limits.MIN_CALL_DEADLINE_MS)
    # Refused as the server's first step: nothing stored, nothing refunded.
    assert paygrid.rows("SELECT count(*) FROM refunds") == [(0,)]
    assert paygrid.ledger("card").get(f"{payment.payment_id}.0").refunded_minor == 0


def _refund_service(paygrid) -> RefundService:
    """The server's refund service over the same database and channels, to
    hand it a remaining deadline exactly at the limit (gRPC cannot)."""
    store = (PostgresPaymentStore(paygrid.app.database, ProtobufSnapshots()) if paygrid.engine == "postgresql"
             else SqlitePaymentStore(paygrid.app.database, ProtobufSnapshots()))
    return RefundService(store, paygrid.app.channels, paygrid.app.in_flight, PaymentsFirst(0))


async def test_a_refund_exactly_at_the_minimum_deadline_is_accepted_just_under_refused(
        paygrid) -> None:
    payment = await _paid(paygrid, "k-rmin")
    refunds = _refund_service(paygrid)
    request = RefundInput(payment.payment_id, "r-min", [], "")
    with pytest.raises(DeadlineTooShort):
        await refunds.refund(DEV_TENANT, request, limits.MIN_CALL_DEADLINE_MS - 0.1)
    assert paygrid.rows("SELECT count(*) FROM refunds") == [(0,)]
    refund, _ = await refunds.refund(DEV_TENANT, request, limits.MIN_CALL_DEADLINE_MS)
    assert refund.status is RefundStatus.SUCCEEDED
    assert paygrid.ledger("card").get(f"{payment.payment_id}.0").refunded_minor == 1_000
