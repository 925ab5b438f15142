"""Real-time payments before batch work (domain/payments_first.py) in a real
server: while a caller waits for a Pay or a refund, each batch step (a
message's items stored, a group started) waits for it, at most
batch_yield_to_payments_ms, and /metrics says how much. The moment "a Pay is running" is made by
holding its channel's charges, never by timing."""

from __future__ import annotations

import asyncio

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import payment_service_pb2 as pb
from tests.api.test_metrics import scrape
from tests.conftest import leg, pay_request
from tests.support.batch_client import batch_stub, chunk, header, submit, tx

STEPS = "paygrid_batch_steps_yielded_to_payments_total"
SECONDS = "paygrid_batch_yielded_to_payments_seconds_total"
GROUPS = 4


async def batch_of_four_groups(paygrid, batch_id: str):
    """Four groups of five card/EUR items, in one message."""
    reply = await submit(batch_stub(paygrid.channel), header(batch_id, max_group_size=5),
                         chunk(*(tx(f"{batch_id}-{i}") for i in range(5 * GROUPS))))
    assert reply.summary.status == batch_pb.BATCH_STATUS_COMPLETED
    assert reply.summary.counts.succeeded == 5 * GROUPS
    return reply


async def pay_held_at_the_wallet(paygrid) -> tuple[asyncio.Future, object]:
    """A Pay whose one leg is held at the wallet channel: its caller waits."""
    wallet = paygrid.simulator("wallet")
    wallet.faults.hold_charges()
    paying = asyncio.ensure_future(paygrid.stub.Pay(
        pay_request("k-held", leg("merchant_0001", channel="wallet")), timeout=60))
    await wallet.faults.held(calls=1)
    return paying, wallet


async def test_a_batch_waits_for_a_running_pay_at_most_the_yield_and_still_completes(
        start_paygrid) -> None:
    paygrid = await start_paygrid(batch_yield_to_payments_ms=50)
    paying, wallet = await pay_held_at_the_wallet(paygrid)

    # The Pay runs from the batch's first step to its last: each step waited
    # its 50 ms and went on, so the batch is slowed, never stopped.
    await batch_of_four_groups(paygrid, "b-yield")
    assert not paying.done()
    page = await scrape(paygrid.app.metrics_port)
    steps = page.value(STEPS)
    assert steps >= GROUPS + 1  # every group's start and the items' storing (once or more)
    assert page.value(SECONDS) >= 0.9 * steps * 0.050

    wallet.faults.release_charges()
    assert (await paying).payment.status == pb.PAYMENT_STATUS_SUCCEEDED


async def test_a_batch_waits_for_a_running_refund_too(start_paygrid) -> None:
    """A refund's caller waits for money to move as a Pay's does."""
    paygrid = await start_paygrid(batch_yield_to_payments_ms=50)
    paid = (await paygrid.stub.Pay(
        pay_request("k-to-refund", leg("merchant_0001", channel="wallet")), timeout=30)).payment
    assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED
    wallet = paygrid.simulator("wallet")
    wallet.faults.freeze()
    refunding = asyncio.ensure_future(paygrid.stub.RefundPayment(pb.RefundPaymentRequest(
        payment_id=paid.payment_id, idempotency_key="r-held"), timeout=60))
    await wallet.faults.frozen(calls=1)

    await batch_of_four_groups(paygrid, "b-refund")
    assert not refunding.done()
    page = await scrape(paygrid.app.metrics_port)
    assert page.value(STEPS) >= GROUPS + 1

    wallet.faults.thaw()
    assert (await refunding).refund.status == pb.REFUND_STATUS_SUCCEEDED
    await batch_of_four_groups(paygrid, "b-after-refund")
    assert (await scrape(paygrid.app.metrics_port)).value(STEPS) == page.value(STEPS)


async def test_no_step_waits_with_the_yield_off(start_paygrid) -> None:
    paygrid = await start_paygrid(batch_yield_to_payments_ms=0)
    paying, wallet = await pay_held_at_the_wallet(paygrid)
    await batch_of_four_groups(paygrid, "b-off")
    page = await scrape(paygrid.app.metrics_port)
    assert (page.value(STEPS), page.value(SECONDS)) == (0, 0)
    wallet.faults.release_charges()
    assert (await paying).payment.status == pb.PAYMENT_STATUS_SUCCEEDED


async def test_pays_that_ended_hold_no_batch_back(start_paygrid) -> None:
    """Ended, answered or failed, they are not counted as running: a batch
    afterwards never waits (with the longest yield, each of its steps would)."""
    paygrid = await start_paygrid(batch_yield_to_payments_ms=1_000)
    paid = (await paygrid.stub.Pay(pay_request("k-ok", leg()), timeout=30)).payment
    assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED
    declined = (await paygrid.stub.Pay(
        pay_request("k-declined", leg("decline_merchant", channel="card")), timeout=30)).payment
    assert declined.status == pb.PAYMENT_STATUS_FAILED
    accepted = (await paygrid.stub.Pay(
        pay_request("k-accepted", leg(), wait=pb.PAY_WAIT_ACCEPTED), timeout=30)).payment
    assert accepted.status == pb.PAYMENT_STATUS_PROCESSING
    await paygrid.app.in_flight.drain(timeout_s=30)

    await batch_of_four_groups(paygrid, "b-after")
    page = await scrape(paygrid.app.metrics_port)
    assert page.value(STEPS) == 0
