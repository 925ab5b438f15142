"""SIGTERM: health says NOT_SERVING at once, calls in progress finish and are
stored, batch groups in progress finish, and the process exits cleanly."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from tests.support.api_key_metadata import keyed_channel
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator
from tests.support.batch_client import batch_stub, chunk, collect, header, submit, tx
from tests.conftest import leg, pay_request
from tests.support.server_process import ServerProcess, free_port, write_config

async def test_sigterm_flips_health_and_lets_payments_in_progress_finish(tmp_path: Path) -> None:
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour())
    card.faults.hold_charges()  # in progress, provably, until released
    port = free_port()
    database = tmp_path / "paygrid.sqlite3"
    config = write_config(tmp_path / "paygrid.toml", port, database, {"card": sim_port},
                          shutdown_drain_delay_ms=500, shutdown_grace_ms=10_000)
    server = ServerProcess(config, tmp_path / "server.log")
    try:
        await server.start(port)
        async with keyed_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.PaymentServiceStub(channel)
            calls = [asyncio.ensure_future(stub.Pay(pay_request(f"k-{i}", leg(f"merchant_{i}")),
                                                    timeout=30)) for i in range(3)]
            await asyncio.wait_for(card.faults.held(3), 60)
            # Watched from before the signal: the flip is pushed to the
            # watcher, not caught by probing within the drain delay.
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            server.process.send_signal(signal.SIGTERM)
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
            card.faults.release_charges()  # the calls in progress finish
            payments = [(await call).payment for call in calls]
        assert {p.status for p in payments} == {pb.PAYMENT_STATUS_SUCCEEDED}
        assert await asyncio.to_thread(server.process.wait, 20) == 0
    finally:
        server.terminate()
        await sim_server.stop(None)
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT DISTINCT status FROM payments").fetchall() == [("SUCCEEDED",)]
    assert len(card.ledger.captured()) == 3
    log = (tmp_path / "server.log").read_text()
    assert '"server.draining"' in log and '"server.stopped"' in log


async def test_sigterm_mid_batch_finishes_its_groups_and_a_resubmission_completes_it(
        tmp_path: Path) -> None:
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour())
    card.faults.hold_charges()  # a group is charging, provably, when SIGTERM comes
    port = free_port()
    database = tmp_path / "paygrid.sqlite3"
    config = write_config(tmp_path / "paygrid.toml", port, database, {"card": sim_port},
                          shutdown_grace_ms=2_000)
    server = ServerProcess(config, tmp_path / "server.log")
    items = [tx(f"p{i}", amount_minor=100 + i) for i in range(40)]
    try:
        await server.start(port)
        async with keyed_channel(f"127.0.0.1:{port}") as channel:
            # Only half the items are sent before the stream stays open, idle.
            outgoing: asyncio.Queue = asyncio.Queue()

            async def requests():
                while (message := await outgoing.get()) is not None:
                    yield message

            call = batch_stub(channel).SubmitBatch(requests(), timeout=60)
            await outgoing.put(header("payroll-term", max_group_size=5, parallelism=2))
            await outgoing.put(chunk(*items[:20]))
            await asyncio.wait_for(card.faults.held(1), 60)
            server.process.send_signal(signal.SIGTERM)
            card.faults.release_charges()
            try:
                await collect(call)
            except grpc.aio.AioRpcError:
                pass  # after the grace the server closes the stream it was waiting on
            assert await asyncio.to_thread(server.process.wait, 30) == 0
        with sqlite3.connect(database) as db:
            in_progress = db.execute("SELECT count(*) FROM batch_items WHERE status IN "
                                     "('PROCESSING', 'UNKNOWN')").fetchone()[0]
        assert in_progress == 0, "every group that started was finished and stored"

        await server.start(port)
        async with keyed_channel(f"127.0.0.1:{port}") as channel:
            reply = await submit(batch_stub(channel),
                                 header("payroll-term", max_group_size=5, parallelism=2),
                                 chunk(*items))
        assert reply.summary.counts.succeeded == 40
    finally:
        server.terminate()
        await sim_server.stop(None)
    charged = [c.idempotency_key for c in card.ledger.captured()]
    assert len(charged) == 40 and len(set(charged)) == 40
