"""The channel simulator as shipped: standalone process, failure rate, fences."""

from __future__ import annotations

import asyncio
import re
import sys

import grpc
import pytest

from paygrid.channel.v1 import payment_channel_pb2 as pb
from paygrid.channel.v1 import payment_channel_pb2_grpc as pb_grpc
from paygrid.type.v1 import money_pb2
from paygrid.v1 import payment_service_pb2 as api
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour
from tests.conftest import TEST_CHANNELS, channel, leg, pay_request


async def test_standalone_simulator_serves_the_channel_protocol() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "paygrid_server.simulator", "--name", "acq",
        "--listen", "127.0.0.1:0", stdout=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        port = int(re.search(r"port (\d+)", line).group(1))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.PaymentChannelStub(ch)
            amount = money_pb2.Money(currency="EUR", amount_minor=700)
            first = await stub.Charge(pb.ChargeRequest(idempotency_key="k1", payee="m1",
                                                       amount=amount))
            again = await stub.Charge(pb.ChargeRequest(idempotency_key="k1", payee="m1",
                                                       amount=amount))
            assert first.charge.status == pb.CHARGE_STATUS_CAPTURED
            assert again.charge.charge_id == first.charge.charge_id  # idempotent by key
            declined = await stub.Charge(pb.ChargeRequest(
                idempotency_key="k2", payee="decline_do_not_honor", amount=amount))
            assert declined.charge.status == pb.CHARGE_STATUS_DECLINED
            assert declined.charge.decline_code == "do_not_honor"
            # A Void before any charge fences the key: a late Charge moves no money.
            await stub.Void(pb.VoidRequest(idempotency_key="k3"))
            late = await stub.Charge(pb.ChargeRequest(idempotency_key="k3", payee="m1",
                                                      amount=amount))
            assert late.charge.status == pb.CHARGE_STATUS_VOIDED
            assert not late.charge.HasField("amount")
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.GetCharge(pb.GetChargeRequest(idempotency_key="nope"))
            assert error.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.Refund(pb.RefundRequest(
                    idempotency_key="r1", charge_idempotency_key="k1",
                    amount=money_pb2.Money(currency="EUR", amount_minor=701)))
            assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        process.terminate()
        await process.wait()


async def test_failing_channel_is_fenced_and_the_leg_fails_over(start_paygrid) -> None:
    # Every Charge at card fails UNAVAILABLE: it may have been processed, so
    # card is settled (GetCharge, then Void) before the wallet is charged.
    paygrid = await start_paygrid((channel("card", simulator=SimulatorBehaviour(failure_rate=1.0)),
                                   *TEST_CHANNELS[1:]))
    payment = (await paygrid.stub.Pay(pay_request("k-fail", leg()), timeout=5)).payment
    assert payment.status == api.PAYMENT_STATUS_SUCCEEDED
    assert payment.legs[0].channel == "wallet" and payment.legs[0].attempts == 3
    assert paygrid.ledger("card").get(f"{payment.payment_id}.0").status.value == "VOIDED"
    assert len(paygrid.captured_everywhere()) == 1


async def test_held_charges_pass_the_first_n_calls_and_hold_the_next_until_released() -> None:
    """hold_charges(after_calls=N): exactly N calls go through, the next is
    held (charging nothing) and announced to held(), until released."""
    from paygrid_server.simulator.channel_simulator import start_simulator
    server, card, port = await start_simulator("card", SimulatorBehaviour())
    card.faults.hold_charges(after_calls=2)
    amount = money_pb2.Money(currency="EUR", amount_minor=700)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.PaymentChannelStub(ch)

            def charge(key: str):
                return stub.Charge(pb.ChargeRequest(idempotency_key=key, payee="m1",
                                                    amount=amount), timeout=60)
            for key in ("k1", "k2"):  # exactly at the limit: through
                assert (await charge(key)).charge.status == pb.CHARGE_STATUS_CAPTURED
            held = asyncio.ensure_future(charge("k3"))  # one past it: held
            await asyncio.wait_for(card.faults.held(1), 60)
            await card.wait_until(lambda: card.charges_in_progress == 1, "k3 in progress")
            assert card.faults.charges_held == 1 and sorted(card.ledger.charges) == ["k1", "k2"]
            card.faults.release_charges()
            assert (await held).charge.status == pb.CHARGE_STATUS_CAPTURED
            assert sorted(card.ledger.charges) == ["k1", "k2", "k3"]
            # Released: the hold and its count are gone.
            assert (await charge("k4")).charge.status == pb.CHARGE_STATUS_CAPTURED
            assert card.faults.charges_held == 1
    finally:
        await server.stop(None)
