"""A payment in flight when the server dies is resolved on restart by asking
the channel; a leg whose channel vanished mid-call is resolved once it is back."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc
import pytest

from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from tests.support.api_key_metadata import keyed_channel
from paygrid_server.config import ChannelConfig
from paygrid_server.domain.ports.payment_channel import ChargeStatus
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator
from tests.conftest import channel, leg, pay_request, pay_until_final, slow
from tests.support.server_process import ServerProcess, free_port, write_config


async def test_payments_in_flight_at_a_crash_are_resolved_on_restart(tmp_path: Path) -> None:
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour())
    port = free_port()
    database = tmp_path / "paygrid.sqlite3"
    config = write_config(tmp_path / "paygrid.toml", port, database, {"card": sim_port})
    server = ServerProcess(config, tmp_path / "server.log")
    try:
        await server.start(port)
        async with keyed_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.PaymentServiceStub(ch)
            charged = pay_request("k-charged", leg("hang_after_charge_1"))  # charge lands, answer lost
            unsent = pay_request("k-unsent", leg("timeout_1"))  # charge never lands
            calls = [asyncio.ensure_future(stub.Pay(r, timeout=60)) for r in (charged, unsent)]
            await card.wait_until(
                lambda: card.charges_in_progress == 2 and bool(card.ledger.charges),
                "both charges to reach the channel")
            server.kill()
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError):
                    await call

        def stored(sql):
            import sqlite3
            with sqlite3.connect(database) as db:
                return db.execute(sql).fetchall()

        ids = dict(stored("SELECT idempotency_key, payment_id FROM payments"))
        assert stored("SELECT DISTINCT status FROM payments") == [("PROCESSING",)]

        await server.start(port)  # serves at once; recovery runs in the background
        async with keyed_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.PaymentServiceStub(ch)
            # The retries are told REQUEST_IN_PROGRESS until recovery is done.
            got = await pay_until_final(stub, charged)
            assert got.status == pb.PAYMENT_STATUS_SUCCEEDED
            key = f"{got.payment_id}.0"
            assert got.legs[0].channel_reference == card.ledger.get(key).charge_id
            # Charged again under its key, the channel still answered nothing:
            # only then is the key fenced.
            lost = await pay_until_final(stub, unsent)
            assert lost.status == pb.PAYMENT_STATUS_FAILED
            assert lost.legs[0].failure.reason == "INTERRUPTED"
            fence = card.ledger.get(f"{lost.payment_id}.0")
            assert fence.status is ChargeStatus.VOIDED and fence.amount is None

            # The client's retry gets the resolved payment; the channel is not called again.
            replay = (await stub.Pay(charged, timeout=10)).payment
            assert replay.payment_id == got.payment_id
            assert card.ledger.charge_requests[key] == 1
            assert [c.idempotency_key for c in card.ledger.captured()] == [key]
    finally:
        server.terminate()
        await sim_server.stop(None)

    events = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()
              if line.startswith("{")]
    resolved = [e for e in events if e["event"] == "recovery.resolved"]
    assert {e["payment_id"] for e in resolved} == set(ids.values())


async def test_unknown_leg_is_resolved_when_its_channel_comes_back(start_paygrid) -> None:
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour())
    paygrid = await start_paygrid((channel("card", target=f"127.0.0.1:{sim_port}",
                                           timeout_ms=5_000),),
                                  recovery_interval_ms=200)
    call = asyncio.ensure_future(paygrid.stub.Pay(pay_request(
        "k-unknown", leg("hang_after_charge_2"), mode=pb.PAYMENT_MODE_INDEPENDENT), timeout=30))
    await card.wait_until(lambda: bool(card.ledger.charges), "the charge to land")
    await sim_server.stop(None)  # the channel vanishes with the answer
    payment = (await call).payment
    assert payment.status == pb.PAYMENT_STATUS_PROCESSING
    assert payment.legs[0].status == pb.LEG_STATUS_UNKNOWN
    assert payment.legs[0].failure.reason == "OUTCOME_UNKNOWN"

    sim_server, _, _ = await start_simulator("card", SimulatorBehaviour(),
                                             f"127.0.0.1:{sim_port}", ledger=card.ledger)
    try:
        async def settled():
            return (await paygrid.stub.GetPayment(
                pb.GetPaymentRequest(payment_id=payment.payment_id))).payment

        deadline = time.monotonic() + 60  # an outcome's timeout: the resolver settles it
        while (now := await settled()).status == pb.PAYMENT_STATUS_PROCESSING:
            assert time.monotonic() < deadline, "resolver never settled the leg"
            await asyncio.sleep(0.1)
        assert now.status == pb.PAYMENT_STATUS_SUCCEEDED
        assert now.legs[0].channel_reference == card.ledger.get(f"{payment.payment_id}.0").charge_id
    finally:
        await sim_server.stop(None)


async def test_resolver_never_takes_over_a_payment_that_is_still_running(start_paygrid) -> None:
    # The resolver runs every millisecond while payments are being created:
    # it must only ever pick up payments nobody is driving.
    paygrid = await start_paygrid((channel("card", simulator=slow(30)),), recovery_interval_ms=1)
    responses = await asyncio.gather(*(
        paygrid.stub.Pay(pay_request(f"k-busy-{i}", leg()), timeout=10) for i in range(40)))
    assert {r.payment.status for r in responses} == {pb.PAYMENT_STATUS_SUCCEEDED}
    assert len(paygrid.ledger("card").captured()) == 40


async def test_all_or_nothing_reverses_a_leg_confirmed_after_the_payment_failed(
        start_paygrid) -> None:
    # leg 1's channel takes the charge and vanishes: unknown, so the payment
    # fails and leg 0 is voided. When the channel is back and confirms the
    # charge, it must be reversed too: the payment ends FAILED, nothing held.
    sim_server, acquirer, sim_port = await start_simulator("acquirer", SimulatorBehaviour())
    paygrid = await start_paygrid(
        (channel("card"), ChannelConfig("acquirer", target=f"127.0.0.1:{sim_port}",
                                        timeout_ms=5_000)),
        recovery_interval_ms=200)
    call = asyncio.ensure_future(paygrid.stub.Pay(pay_request(
        "k-aon-unknown", leg("hotel_0001", channel="card"),
        leg("hang_after_charge_3", channel="acquirer")), timeout=30))
    await acquirer.wait_until(lambda: bool(acquirer.ledger.charges),
                            "the acquirer charge to land")
    await sim_server.stop(None)
    payment = (await call).payment
    assert payment.status == pb.PAYMENT_STATUS_PROCESSING
    assert [l.status for l in payment.legs] == [pb.LEG_STATUS_VOIDED, pb.LEG_STATUS_UNKNOWN]
    assert payment.failure.reason == "OUTCOME_UNKNOWN"

    sim_server, _, _ = await start_simulator("acquirer", SimulatorBehaviour(),
                                             f"127.0.0.1:{sim_port}", ledger=acquirer.ledger)
    try:
        deadline = time.monotonic() + 60  # an outcome's timeout: the resolver settles it
        while True:
            now = (await paygrid.stub.GetPayment(
                pb.GetPaymentRequest(payment_id=payment.payment_id))).payment
            if now.status != pb.PAYMENT_STATUS_PROCESSING:
                break
            assert time.monotonic() < deadline, f"never finished: {now}"
            await asyncio.sleep(0.1)
        assert now.status == pb.PAYMENT_STATUS_FAILED
        assert [l.status for l in now.legs] == [pb.LEG_STATUS_VOIDED, pb.LEG_STATUS_VOIDED]
        assert now.failure.reason == "OUTCOME_UNKNOWN"
        assert acquirer.ledger.captured() == [] and paygrid.captured_everywhere() == []
    finally:
        await sim_server.stop(None)
