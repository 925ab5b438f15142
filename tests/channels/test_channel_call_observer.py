"""GrpcPaymentChannel tells its observer (the channel metrics) how each
unary call ended: its method's short name, its status (CANCELLED when the
caller gave up on it) and how long it took."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from paygrid_server.channels.grpc_payment_channel import GrpcPaymentChannel
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.ports.bulk_charges import ChargeOrders
from paygrid_server.domain.ports.payment_channel import ChargeNotFound
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator


async def test_each_call_is_told_with_its_method_status_and_seconds() -> None:
    server, card, port = await start_simulator("card", SimulatorBehaviour())
    calls: list[tuple[str, grpc.StatusCode, float]] = []
    channel = GrpcPaymentChannel("card", f"127.0.0.1:{port}",
                                 observe_call=lambda *call: calls.append(call))
    try:
        await channel.charge("k1", "payer", "m1", Money("EUR", 700), "r1", 5_000)
        await channel.charge_batch(ChargeOrders(["k2"], "payer", ["m1"], [Money("EUR", 1)],
                                                ["r2"]), 5_000)
        with pytest.raises(ChargeNotFound):
            await channel.get_charge("nothing", 5_000)
        card.faults.hold_charges(after_calls=0)
        held = asyncio.ensure_future(
            channel.charge("k3", "payer", "m1", Money("EUR", 700), "r3", 60_000))
        await asyncio.wait_for(card.faults.held(1), 60)
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
        card.faults.release_charges()
    finally:
        await channel.close()
        await server.stop(None)
    assert [(method, code) for method, code, _ in calls] == [
        ("Charge", grpc.StatusCode.OK), ("ChargeBatch", grpc.StatusCode.OK),
        ("GetCharge", grpc.StatusCode.NOT_FOUND), ("Charge", grpc.StatusCode.CANCELLED)]
    assert all(seconds > 0 for _, _, seconds in calls)
