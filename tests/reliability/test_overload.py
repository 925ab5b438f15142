"""Overload, the fast version (the long one, at 2x the saturating rate for a
minute, is scripts/reliability_overload.py): an open loop well above what a
server with a small max_concurrent_calls can serve gets only OK and
RESOURCE_EXHAUSTED (OVERLOADED, with a RetryInfo); every admitted payment is
stored and charged once, nothing shed is stored or charged, and the server
serves normally as soon as the load stops. No timing is asserted beyond
every call ending within its deadline (any DEADLINE_EXCEEDED fails).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from tests.support.api_key_metadata import keyed_channel
from paygrid_server.transport.load_shedding import RETRY_SHED_CALL_AFTER_MS, ConcurrencyLimit
from tests.conftest import channel, leg, pay_request, rich_status, slow
from tests.support.nginx_front import nginx_front, nginx_unavailable

MAX_CONCURRENT_CALLS = 4
CHANNEL_LATENCY_MS = 100  # capacity: 4 calls per 100 ms = 40 payments/s
OFFERED_CALLS = 150
OFFERED_PER_S = 150  # almost 4x the capacity, for one second
CALL_TIMEOUT_S = 30


async def pay_or_error(stub, key: str) -> pb.Payment | grpc.aio.AioRpcError:
    try:
        return (await stub.Pay(pay_request(key, leg(f"m_{key}")), timeout=CALL_TIMEOUT_S)).payment
    except grpc.aio.AioRpcError as error:
        return error


async def open_loop(stub, keys: list[str]) -> dict[str, pb.Payment | grpc.aio.AioRpcError]:
    """Starts one Pay per key at OFFERED_PER_S whatever the answers (as
    independent clients would), then waits for every answer."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    calls = []
    for n, key in enumerate(keys):
        await asyncio.sleep(max(0.0, started + n / OFFERED_PER_S - loop.time()))
        calls.append(asyncio.ensure_future(pay_or_error(stub, key)))
    return dict(zip(keys, await asyncio.gather(*calls)))


async def test_an_open_loop_above_capacity_is_served_or_shed_cleanly_and_nothing_else(
        start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card", simulator=slow(CHANNEL_LATENCY_MS)),),
                                  max_concurrent_calls=MAX_CONCURRENT_CALLS)
    keys = [f"k-{n}" for n in range(OFFERED_CALLS)]
    outcomes = await open_loop(paygrid.stub, keys)

    admitted = {k: p for k, p in outcomes.items() if isinstance(p, pb.Payment)}
    shed = {k: e for k, e in outcomes.items() if isinstance(e, grpc.aio.AioRpcError)}
    assert {e.code() for e in shed.values()} == {grpc.StatusCode.RESOURCE_EXHAUSTED}, \
        {k: (e.code(), e.details()) for k, e in shed.items()
         if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert admitted, "nothing was admitted"
    assert {p.status for p in admitted.values()} == {pb.PAYMENT_STATUS_SUCCEEDED}
    for error in shed.values():
        details = rich_status(error)
        assert details["ErrorInfo"].reason == "OVERLOADED"
        assert details["RetryInfo"].retry_delay.ToMilliseconds() > 0

    # Every admitted payment stored and charged once; nothing shed stored or charged.
    stored = dict(paygrid.rows("SELECT idempotency_key, status FROM payments"))
    assert stored == {key: "SUCCEEDED" for key in admitted}
    ledger = paygrid.ledger("card")
    charged = {c.idempotency_key: c for c in ledger.captured()}
    assert charged.keys() == {f"{p.payment_id}.0" for p in admitted.values()}
    assert set(ledger.charge_requests.values()) == {1}
    assert paygrid.app.load_shedding.calls.shed_total == len(shed)
    assert paygrid.app.load_shedding.calls.in_progress == 0

    # Load gone: served at once, shed keys included (a retry with the same key).
    retried = list(shed)[:MAX_CONCURRENT_CALLS]
    fresh = [f"k-after-{n}" for n in range(MAX_CONCURRENT_CALLS)]
    for batch in (retried, fresh):
        payments = await asyncio.gather(*(
            paygrid.stub.Pay(pay_request(key, leg(f"m_{key}")), timeout=CALL_TIMEOUT_S)
            for key in batch))
        assert {r.payment.status for r in payments} == {pb.PAYMENT_STATUS_SUCCEEDED}
    assert len(ledger.captured()) == len(admitted) + len(retried) + len(fresh)


@pytest.mark.skipif(nginx_unavailable() is not None, reason=str(nginx_unavailable()))
async def test_the_nginx_front_refuses_past_its_limit_with_paygrids_own_status(
        start_paygrid) -> None:
    """deploy/nginx/grpc-admission.conf.in: past its limit nginx answers at
    once, in place of paygrid, with the very status paygrid sheds with."""
    paygrid = await start_paygrid((channel("card", simulator=slow(CHANNEL_LATENCY_MS * 3)),))
    front_limit, offered = 2, 6
    async with nginx_front(f"127.0.0.1:{paygrid.app.port}", front_limit) as front:
        async with keyed_channel(front) as via_front:
            stub = pb_grpc.PaymentServiceStub(via_front)
            outcomes = await asyncio.gather(*(pay_or_error(stub, f"front-{n}")
                                              for n in range(offered)))
            # Not limited: health checks and the load gone, a shed key retried.
            health = await health_pb2_grpc.HealthStub(via_front).Check(
                health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
            shed_key = next(f"front-{n}" for n, o in enumerate(outcomes)
                            if isinstance(o, grpc.aio.AioRpcError))
            retried = (await stub.Pay(pay_request(shed_key, leg(f"m_{shed_key}")),
                                      timeout=CALL_TIMEOUT_S)).payment

    admitted = [o for o in outcomes if isinstance(o, pb.Payment)]
    shed = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(admitted) == front_limit and len(shed) == offered - front_limit
    assert {p.status for p in admitted} == {pb.PAYMENT_STATUS_SUCCEEDED}
    # Word for word what paygrid sends when it sheds, at the front's limit.
    own = ConcurrencyLimit("calls", front_limit).shed_status
    for error in shed:
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details() == own.details
        details = rich_status(error)
        assert (details["ErrorInfo"].reason, details["ErrorInfo"].domain) == ("OVERLOADED", "paygrid")
        assert details["RetryInfo"].retry_delay.ToMilliseconds() == RETRY_SHED_CALL_AFTER_MS
    # paygrid never saw the shed calls: nothing stored, nothing refused by it.
    assert paygrid.app.load_shedding.calls.shed_total == 0
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert retried.status == pb.PAYMENT_STATUS_SUCCEEDED
    stored = dict(paygrid.rows("SELECT idempotency_key, status FROM payments"))
    assert stored == {**{p.idempotency_key: "SUCCEEDED" for p in admitted},
                      shed_key: "SUCCEEDED"}
