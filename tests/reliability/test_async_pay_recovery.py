"""A payment accepted with wait = PAY_WAIT_ACCEPTED has no call left to end
it: its legs run on in the server. SIGKILL, a graceful SIGTERM and a SIGTERM
past the grace all leave it exactly as they leave any payment in flight:
finished before exit, or PROCESSING and resumed at the next start, charged
exactly once; never left PROCESSING for good. The moments are made by
holding the channel's charges, not by timing."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator
from tests.conftest import leg, pay_request, pay_until_final
from tests.support.api_key_metadata import keyed_channel
from tests.support.crash_rig import crash_rig
from tests.support.server_process import ServerProcess, free_port, write_config

ACCEPTED = pb.PAY_WAIT_ACCEPTED
GRACE_MS = 300
# The grace plus the shutdown's hard margin and a slow interpreter exit.
EXITS_WITHIN_S = GRACE_MS / 1_000 + 5 + 10


def statuses(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as db:
        return dict(db.execute("SELECT status, count(*) FROM payments GROUP BY status"))


async def test_an_accepted_payment_cut_by_sigkill_is_finished_by_recovery_charged_once(
        tmp_path: Path) -> None:
    async with crash_rig(tmp_path, ("card",), SimulatorBehaviour()) as rig:
        card = rig.simulators["card"]
        card.faults.hold_charges()  # held across the kill and the restart, until released
        request = pay_request("async-crash", leg("payee_1", "EUR", 1_234), wait=ACCEPTED)
        async with rig.channel() as channel:
            accepted = (await pb_grpc.PaymentServiceStub(channel).Pay(request, timeout=30)).payment
            assert accepted.status == pb.PAYMENT_STATUS_PROCESSING
            await card.faults.held(calls=1)  # the leg is at the channel
        rig.kill()
        assert rig.count_by_status("payments") == {"PROCESSING": 1}

        await rig.restart()
        # Recovery has taken the payment up: its own Charge (same key) is held too.
        await card.faults.held(calls=2)
        async with rig.channel() as channel:
            stub = pb_grpc.PaymentServiceStub(channel)
            got = (await stub.GetPayment(
                pb.GetPaymentRequest(payment_id=accepted.payment_id), timeout=10)).payment
            assert got.status == pb.PAYMENT_STATUS_PROCESSING
            # An accepted-only retry meanwhile: the payment as it stands, not a second one.
            again = (await stub.Pay(request, timeout=10)).payment
            assert (again.payment_id, again.status) == (accepted.payment_id,
                                                        pb.PAYMENT_STATUS_PROCESSING)
            card.faults.release_charges()
            final = await pay_until_final(stub, pay_request(
                "async-crash", leg("payee_1", "EUR", 1_234), wait=pb.PAY_WAIT_FINAL))
            got = (await stub.GetPayment(
                pb.GetPaymentRequest(payment_id=accepted.payment_id), timeout=10)).payment
        assert final.payment_id == accepted.payment_id
        assert final.status == got.status == pb.PAYMENT_STATUS_SUCCEEDED
        key = f"{accepted.payment_id}.0"
        assert [c.idempotency_key for c in card.ledger.captured()] == [key]
        assert card.ledger.captured()[0].amount.amount_minor == 1_234
    assert rig.count_by_status("payments") == {"SUCCEEDED": 1}


async def test_sigterm_lets_accepted_payments_finish_before_the_process_exits(
        tmp_path: Path) -> None:
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour())
    card.faults.hold_charges()
    port = free_port()
    database = tmp_path / "paygrid.sqlite3"
    config = write_config(tmp_path / "paygrid.toml", port, database, {"card": sim_port},
                          shutdown_drain_delay_ms=500, shutdown_grace_ms=10_000)
    server = ServerProcess(config, tmp_path / "server.log")
    try:
        await server.start(port)
        async with keyed_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.PaymentServiceStub(channel)
            for i in range(2):
                accepted = (await stub.Pay(pay_request(f"k-{i}", leg(f"merchant_{i}"),
                                                       wait=ACCEPTED), timeout=30)).payment
                assert accepted.status == pb.PAYMENT_STATUS_PROCESSING
            await asyncio.wait_for(card.faults.held(2), 60)  # both calls over, legs held
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            server.process.send_signal(signal.SIGTERM)
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
            card.faults.release_charges()
        assert await asyncio.to_thread(server.process.wait, 20) == 0
    finally:
        card.faults.release_charges()
        server.terminate()
        await sim_server.stop(None)
    assert statuses(database) == {"SUCCEEDED": 2}
    assert len(card.ledger.captured()) == 2


async def test_an_accepted_payment_held_past_the_grace_is_left_resumable_and_charged_once(
        tmp_path: Path) -> None:
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour())
    card.faults.hold_charges()
    port = free_port()
    database = tmp_path / "paygrid.sqlite3"
    config = write_config(tmp_path / "paygrid.toml", port, database, {"card": sim_port},
                          shutdown_grace_ms=GRACE_MS)
    server = ServerProcess(config, tmp_path / "server.log")
    request = pay_request("k-cut", leg("merchant_cut"), wait=ACCEPTED)
    try:
        await server.start(port)
        async with keyed_channel(f"127.0.0.1:{port}") as channel:
            accepted = (await pb_grpc.PaymentServiceStub(channel).Pay(request,
                                                                      timeout=30)).payment
        await asyncio.wait_for(card.faults.held(1), 60)
        server.process.send_signal(signal.SIGTERM)
        # The grace ends with the leg still held: the process exits anyway.
        await asyncio.to_thread(server.process.wait, EXITS_WITHIN_S)
        assert statuses(database) == {"PROCESSING": 1}
        card.faults.release_charges()  # the channel makes the charge the server asked for
        await card.finish_late_work()

        await server.start(port)  # recovery finds the charge and finishes the payment
        async with keyed_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.PaymentServiceStub(channel)
            final = await pay_until_final(stub, pay_request("k-cut", leg("merchant_cut")))
    finally:
        card.faults.release_charges()
        server.terminate()
        await sim_server.stop(None)
    assert (final.payment_id, final.status) == (accepted.payment_id,
                                                pb.PAYMENT_STATUS_SUCCEEDED)
    assert [c.idempotency_key for c in card.ledger.captured()] == [f"{accepted.payment_id}.0"]
    assert statuses(database) == {"SUCCEEDED": 1}
