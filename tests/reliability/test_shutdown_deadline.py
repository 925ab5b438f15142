"""SIGTERM always ends the process (issue 14, item 8): calls still running
when the grace ends get UNAVAILABLE with RetryInfo (never CANCELLED), the
process exits, a second signal exits at once, and work cut off resumes as
after a crash. The slow work is made slow by holding the channel's charges,
not by timing."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from tests.support.api_key_metadata import keyed_channel
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator
from tests.support.batch_client import batch_stub, chunk, collect, header, open_stream, submit, tx
from tests.conftest import leg, pay_request, rich_status
from tests.support.server_process import ServerProcess, free_port, wait_for, write_config

GRACE_MS = 300
HARD_DEADLINE_MARGIN_S = 5  # process_shutdown.py (not imported: the test runs on old code too)
EXIT_CUT_SHORT = 1
# Drain (0) + grace + the hard deadline's margin, plus room for a slow start of
# the interpreter's exit: a process still alive after this is stuck.
EXITS_WITHIN_S = GRACE_MS / 1_000 + HARD_DEADLINE_MARGIN_S + 10


def assert_cut_off_retryably(error: grpc.aio.AioRpcError) -> None:
    assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
    details = rich_status(error)
    assert details["ErrorInfo"].reason == "SHUTTING_DOWN"
    assert details["RetryInfo"].retry_delay.ToMilliseconds() > 0


async def test_a_batch_held_past_the_grace_is_cut_off_retryably_and_resumes_exactly_once(
        tmp_path: Path) -> None:
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour())
    card.faults.hold_charges()
    port = free_port()
    database = tmp_path / "paygrid.sqlite3"
    config = write_config(tmp_path / "paygrid.toml", port, database, {"card": sim_port},
                          shutdown_grace_ms=GRACE_MS)
    server = ServerProcess(config, tmp_path / "server.log")
    items = [tx(f"p{i}", amount_minor=100 + i) for i in range(20)]
    try:
        await server.start(port)
        async with keyed_channel(f"127.0.0.1:{port}") as channel:
            call, outgoing = open_stream(batch_stub(channel), timeout=60)
            await outgoing.put(header("held", max_group_size=5, parallelism=2))
            await outgoing.put(chunk(*items))
            await wait_for(lambda: card.charges_in_progress == 10, "two groups held at the channel")
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.aio.AioRpcError) as cut:
                await collect(call)
        assert_cut_off_retryably(cut.value)
        assert await asyncio.to_thread(server.process.wait, EXITS_WITHIN_S) == 0
        log = (tmp_path / "server.log").read_text()
        assert '"server.calls_cut_off"' in log and '"server.stopped"' in log

        # The channel had the held charges: they land now, as after a crash.
        card.faults.release_charges()
        await card.finish_late_work()
        with sqlite3.connect(database) as db:
            left = dict(db.execute("SELECT status, count(*) FROM batch_items GROUP BY status"))
        assert left == {"PROCESSING": 10, "RECEIVED": 10}, left

        await server.start(port)
        async with keyed_channel(f"127.0.0.1:{port}") as channel:
            reply = await submit(batch_stub(channel),
                                 header("held", max_group_size=5, parallelism=2), chunk(*items))
        assert reply.summary.counts.succeeded == 20
    finally:
        card.faults.release_charges()
        server.terminate()
        await sim_server.stop(None)
    charged = [c.idempotency_key for c in card.ledger.captured()]
    assert len(charged) == 20 and len(set(charged)) == 20


async def test_pays_held_past_the_grace_end_unavailable_with_retry_info_never_cancelled(
        tmp_path: Path) -> None:
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour())
    card.faults.hold_charges()
    port = free_port()
    config = write_config(tmp_path / "paygrid.toml", port, tmp_path / "paygrid.sqlite3",
                          {"card": sim_port}, shutdown_grace_ms=GRACE_MS)
    server = ServerProcess(config, tmp_path / "server.log")
    try:
        await server.start(port)
        async with keyed_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.PaymentServiceStub(channel)
            calls = [asyncio.ensure_future(stub.Pay(pay_request(f"k-{i}", leg(f"merchant_{i}")),
                                                    timeout=60)) for i in range(3)]
            await wait_for(lambda: card.faults.charges_held == 3, "3 charges held at the channel")
            server.process.send_signal(signal.SIGTERM)
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        for outcome in outcomes:
            assert isinstance(outcome, grpc.aio.AioRpcError), outcome
            assert_cut_off_retryably(outcome)
        assert await asyncio.to_thread(server.process.wait, EXITS_WITHIN_S) == 0
    finally:
        card.faults.release_charges()
        server.terminate()
        await sim_server.stop(None)
    charged = [c.idempotency_key for c in card.ledger.captured()]
    assert len(charged) == len(set(charged)), "no key charged twice"


async def test_a_second_sigterm_during_the_grace_exits_at_once(tmp_path: Path) -> None:
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour())
    card.faults.hold_charges()
    port = free_port()
    config = write_config(tmp_path / "paygrid.toml", port, tmp_path / "paygrid.sqlite3",
                          {"card": sim_port}, shutdown_grace_ms=600_000)
    server = ServerProcess(config, tmp_path / "server.log")
    try:
        await server.start(port)
        async with keyed_channel(f"127.0.0.1:{port}") as channel:
            pay = asyncio.ensure_future(pb_grpc.PaymentServiceStub(channel).Pay(
                pay_request("k-held", leg()), timeout=60))
            await asyncio.wait_for(card.faults.held(1), 60)
            # Watched from before the signal: the flip is pushed to the watcher
            # (a Check sent after the signal may meet a server no longer
            # taking new calls, with no drain delay configured).
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            server.process.send_signal(signal.SIGTERM)
            # The first signal was taken: health says so.
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            server.process.send_signal(signal.SIGTERM)
            # Far inside the 10-minute grace: only the second signal ends it.
            assert await asyncio.to_thread(server.process.wait, 10) == EXIT_CUT_SHORT
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await pay
        assert gone.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "SIGTERM during shutdown" in (tmp_path / "server.log").read_text()
    finally:
        card.faults.release_charges()
        server.terminate()
        await sim_server.stop(None)
