"""A retried Pay never charges twice; a reused key with another body is refused."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from paygrid.v1 import payment_service_pb2 as pb
from tests.conftest import channel, leg, pay_request, rich_status, slow


async def test_replay_returns_the_first_answer_without_calling_the_channel(paygrid) -> None:
    request = pay_request("same-key", leg("merchant_0001"), leg("merchant_0002", "EUR", 250))
    first = (await paygrid.stub.Pay(request)).payment
    requests_after_first = dict(paygrid.ledger("card").charge_requests)
    replay = (await paygrid.stub.Pay(request)).payment
    assert replay == first
    assert paygrid.ledger("card").charge_requests == requests_after_first
    assert paygrid.rows("SELECT count(*) FROM payments") == [(1,)]


async def test_same_key_with_another_body_is_failed_precondition(paygrid) -> None:
    await paygrid.stub.Pay(pay_request("k-body", leg(amount_minor=1_000)))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.Pay(pay_request("k-body", leg(amount_minor=1_001)))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = rich_status(error.value)
    assert details["ErrorInfo"].reason == "IDEMPOTENCY_CONFLICT"
    assert details["PreconditionFailure"].violations[0].subject == "idempotency_key"
    assert paygrid.rows("SELECT count(*) FROM payments") == [(1,)]


async def test_concurrent_requests_with_one_key_make_one_payment_and_one_charge_per_leg(
        start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card", simulator=slow(100)),))
    request = pay_request("k-race", leg("merchant_0001"), leg("merchant_0002"))
    results = await asyncio.gather(*(paygrid.stub.Pay(request) for _ in range(20)),
                                   return_exceptions=True)
    payments = [r.payment for r in results if isinstance(r, pb.PayResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert payments, "the first request is answered with the payment"
    assert len({p.payment_id for p in payments}) == 1
    for error in refused:
        # Still running when the duplicates arrived: retry later, never a second execution.
        assert error.code() == grpc.StatusCode.ABORTED
        assert rich_status(error)["RetryInfo"].retry_delay.ToMilliseconds() > 0
    assert len(payments) + len(refused) == 20
    [payment_id] = {p.payment_id for p in payments}
    assert paygrid.rows("SELECT count(*) FROM payments") == [(1,)]
    assert paygrid.ledger("card").charge_requests == {f"{payment_id}.0": 1, f"{payment_id}.1": 1}
    # Once finished, a retry gets the stored answer.
    assert (await paygrid.stub.Pay(request)).payment.payment_id == payment_id

