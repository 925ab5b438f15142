"""Past the configured concurrency, calls are refused at once with
RESOURCE_EXHAUSTED (and a RetryInfo), not queued; probes are never shed."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paygrid.v1 import payment_service_pb2 as pb
from tests.support.batch_client import batch_stub, chunk, collect, header, open_stream, tx
from tests.conftest import leg, pay_request, rich_status
from tests.support.server_process import wait_for


async def test_calls_past_the_limit_are_shed_at_once_and_served_again_after(
        start_paygrid) -> None:
    paygrid = await start_paygrid(max_concurrent_calls=2)
    card = paygrid.simulator("card")
    card.faults.hold_charges()  # the two calls stay in progress until released
    held = [asyncio.ensure_future(paygrid.stub.Pay(pay_request(f"k-held-{i}", leg(f"m_{i}"))))
            for i in range(2)]
    await asyncio.wait_for(card.faults.held(2), 60)

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.Pay(pay_request("k-shed"), timeout=0.5)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = rich_status(error.value)
    assert details["ErrorInfo"].reason == "OVERLOADED"
    assert details["RetryInfo"].retry_delay.ToMilliseconds() > 0
    health = await health_pb2_grpc.HealthStub(paygrid.channel).Check(
        health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert paygrid.rows("SELECT count(*) FROM payments WHERE idempotency_key = 'k-shed'") == [(0,)]

    card.faults.release_charges()
    assert {(await call).payment.status for call in held} == {pb.PAYMENT_STATUS_SUCCEEDED}
    retried = (await paygrid.stub.Pay(pay_request("k-shed"))).payment
    assert retried.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert paygrid.app.load_shedding.calls.shed_total == 1
    assert paygrid.app.load_shedding.calls.in_progress == 0


async def test_batch_streams_have_their_own_limit(start_paygrid) -> None:
    paygrid = await start_paygrid(max_concurrent_batch_streams=1)
    stub = batch_stub(paygrid.channel)
    first, outgoing = open_stream(stub)
    await outgoing.put(header("b-1"))
    await wait_for(lambda: paygrid.app.load_shedding.batch_streams.in_progress == 1,
                   "the first stream to be open")

    second = stub.SubmitBatch()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await second.read()
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Unary calls are not held back by an open stream.
    assert (await paygrid.stub.Pay(pay_request("k-1"))).payment.status == \
        pb.PAYMENT_STATUS_SUCCEEDED

    await outgoing.put(chunk(tx("r1")))
    await outgoing.put(None)
    assert (await collect(first)).summary.counts.succeeded == 1
