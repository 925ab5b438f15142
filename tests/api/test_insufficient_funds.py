"""A decline with the channel's code insufficient_funds is reason
INSUFFICIENT_FUNDS (the code still given), for Pay legs and batch items
alike, and is a decline in every way: no failover, no breaker trip, AM04 in
a pain.002."""

from __future__ import annotations

from google.rpc import code_pb2, error_details_pb2

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import payment_service_pb2 as pb
from paygrid_client.iso20022_pain002 import reason_for
from paygrid_server.domain.charging.circuit_breaker import BreakerState
from tests.support.batch_client import batch_stub, chunk, header, submit, tx
from tests.conftest import TEST_CHANNELS, leg, pay_request

NO_FUNDS = "decline_insufficient_funds"  # the simulator declines with code insufficient_funds


def _error_info(failure: pb.Failure) -> error_details_pb2.ErrorInfo:
    info = error_details_pb2.ErrorInfo()
    assert any(packed.Unpack(info) for packed in failure.status.details)
    return info


async def test_a_pay_leg_without_funds_fails_insufficient_funds_on_its_first_channel(
        start_paygrid) -> None:
    # A breaker that would open after 2 failed calls: declines must not count.
    paygrid = await start_paygrid(TEST_CHANNELS, breaker_failure_threshold=2)
    for n in range(3):
        # EUR is taken by card, wallet and bank_transfer: a decline stays on card.
        payment = (await paygrid.stub.Pay(pay_request(f"k-nsf-{n}", leg(NO_FUNDS, "EUR")),
                                          timeout=10)).payment
        assert payment.status == pb.PAYMENT_STATUS_FAILED
        failing = payment.legs[0]
        assert (failing.channel, failing.attempts) == ("card", 1)
        assert (failing.failure.reason, failing.failure.decline_code) == (
            "INSUFFICIENT_FUNDS", "insufficient_funds")
        assert payment.failure.reason == "INSUFFICIENT_FUNDS"
        assert failing.failure.status.code == code_pb2.FAILED_PRECONDITION
        info = _error_info(failing.failure)
        assert (info.reason, dict(info.metadata)) == (
            "INSUFFICIENT_FUNDS", {"decline_code": "insufficient_funds"})
    assert paygrid.app.breakers["card"].state is BreakerState.CLOSED
    assert paygrid.ledger("wallet").charge_requests == {}
    assert paygrid.ledger("bank_transfer").charge_requests == {}


async def test_a_batch_item_without_funds_fails_insufficient_funds(paygrid) -> None:
    reply = await submit(batch_stub(paygrid.channel), header(), chunk(
        tx("ok"), tx("nsf", payee=NO_FUNDS), tx("dnh", payee="decline_do_not_honor")))
    results = reply.results
    assert results["nsf"].status == batch_pb.BATCH_ITEM_STATUS_FAILED
    assert (results["nsf"].failure.reason, results["nsf"].failure.decline_code) == (
        "INSUFFICIENT_FUNDS", "insufficient_funds")
    assert _error_info(results["nsf"].failure).reason == "INSUFFICIENT_FUNDS"
    assert results["dnh"].failure.reason == "DECLINED"  # any other code stays DECLINED
    # The pain.002 reports it as ISO's insufficient funds.
    assert reason_for(results["nsf"].failure).code == "AM04"
