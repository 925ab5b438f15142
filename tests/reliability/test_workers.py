"""`serve --workers N` (issue 17, point 4): N server processes on one port,
each a PostgreSQL replica or sharing one SQLite file, watched by one
supervisor that holds the port (and the SQLite file's lock).

On both engines: both workers serve through the one port; a second server
on the port is refused with one line, as for a lone server; SIGTERM stops
them all; a payment of a worker SIGKILLed mid-charge is finished once after
the hand-off. On PostgreSQL: a worker SIGKILLed while it holds a batch
group mid-charge is started again and its group is finished by the replica
rules, every item paid once (on SQLite: test_sqlite_workers_batches.py).
SQLite workers share their supervisor's file, which no other server opens.
More of SQLite's: test_sqlite_workers.py.

The servers are real OS processes; the channel simulator runs in this
process as the one remote channel all workers call, so its ledger is the
channel's whole record and its faults hold whichever worker charges.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import grpc
import pytest

from paygrid.type.v1 import money_pb2
from paygrid.v1 import batch_service_pb2 as bpb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from paygrid_server.ledger_reconciliation import reconcile
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator
from paygrid_server.worker_supervisor import worker_count, worker_metrics_listen
from paygrid.v1 import payment_service_pb2 as pb
from paygrid_server.domain.model.limits import HANDOFF_AFTER_MS
from tests.conftest import pay_request, pay_until_final
from tests.reliability.test_one_server_per_port_and_database import refusal, serve_once
from tests.support.batch_client import batch_stub, chunk, collect, header, open_stream
from tests.support.exactly_once import count_batch
from tests.support.postgres_databases import postgres_rows
from tests.support.server_process import ServerProcess, free_port, wait_for, write_config
from tests.support.worker_log import alive, own_connection, ready_workers, served_by

# At 2^-n a connection sequence lands on one worker only: 40 is never by chance.
CONNECTIONS_TO_SEE_BOTH = 40
LEASES = dict(batch_lease_ms=3_000, batch_lease_renew_every_ms=300, batch_claim_poll_ms=50,
              batch_progress_poll_ms=50)


def workers_process(tmp_path: Path, database: str | Path, sim_port: int, workers: int = 2,
                    **server: int) -> tuple[ServerProcess, int]:
    port = free_port()
    config = write_config(tmp_path / "paygrid.toml", port, database,  # type: ignore[arg-type]
                          {"card": sim_port}, **server)
    config.write_text(config.read_text() + "[postgres]\npool_max_connections = 4\n")
    return ServerProcess(config, tmp_path / "paygrid.log", ("--workers", str(workers))), port


async def database_for(storage_engine: str, tmp_path: Path, postgres_databases) -> str | Path:
    """A fresh database of the engine: a DSN, or a SQLite file the workers share."""
    if storage_engine == "postgresql":
        return await postgres_databases.create()
    return tmp_path / "paygrid.sqlite3"


async def card_simulator(**behaviour):
    server, simulator, port = await start_simulator("card", SimulatorBehaviour(**behaviour))
    return server, simulator, port


def test_workers_is_a_number_from_one_or_auto() -> None:
    assert worker_count("1") == 1 and worker_count("3") == 3
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ValueError, match="expected auto or a number"):
            worker_count(bad)
    result = subprocess.run([sys.executable, "-m", "paygrid_server", "serve", "--workers", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--workers: expected auto or a number" in result.stderr


def test_each_worker_has_its_own_metrics_port() -> None:
    assert worker_metrics_listen("127.0.0.1:9464", 0) == "127.0.0.1:9464"
    assert worker_metrics_listen("127.0.0.1:9464", 1) == "127.0.0.1:9465"
    assert worker_metrics_listen("127.0.0.1:0", 1) == "127.0.0.1:0"
    assert worker_metrics_listen("", 1) == ""


async def test_sqlite_workers_share_the_file_and_a_second_server_on_it_is_refused(
        tmp_path: Path) -> None:
    """The supervisor holds the SQLite file for its workers: they start (the
    file is theirs to share), another server on the file is refused with
    one line, with or without workers of its own."""
    database = tmp_path / "paygrid.sqlite3"
    port = free_port()
    supervisor = ServerProcess(write_config(tmp_path / "a.toml", port, database, {}),
                               tmp_path / "a.log", ("--workers", "2"))
    try:
        await supervisor.start(port)
        await wait_for(lambda: len(ready_workers(supervisor.log)) == 2, "both workers ready")
        for extra in ((), ("--workers", "2")):
            line = refusal(serve_once("--listen", f"127.0.0.1:{free_port()}",
                                      "--database", str(database), *extra))
            assert line.startswith(f"paygrid-server: database {database} is in use by process "
                                   f"{supervisor.process.pid}"), line
    finally:
        supervisor.terminate()
    assert supervisor.process.returncode == 0


async def test_sqlite_workers_start_on_one_file_and_one_worker_is_a_lone_server(
        tmp_path: Path) -> None:
    """SQLite was refused for more than one worker; now the workers share the
    file, and `--workers 1` is still the lone server SQLite always had."""
    database = tmp_path / "paygrid.sqlite3"
    for workers in ("2", "1"):
        port = free_port()
        server = ServerProcess(write_config(tmp_path / f"{workers}.toml", port, database, {}),
                               tmp_path / f"{workers}.log", ("--workers", workers))
        try:
            await server.start(port)
            if workers == "2":
                await wait_for(lambda: len(ready_workers(server.log)) == 2, "both workers ready")
        finally:
            server.terminate()
        assert server.process.returncode == 0, server.log.read_text()[-3000:]


async def test_two_workers_serve_one_port_and_a_second_server_there_is_refused(
        tmp_path: Path, storage_engine: str, postgres_databases) -> None:
    sim_server, _, sim_port = await card_simulator()
    database = await database_for(storage_engine, tmp_path, postgres_databases)
    supervisor, port = workers_process(tmp_path, database, sim_port)
    try:
        await supervisor.start(port)
        await wait_for(lambda: len(ready_workers(supervisor.log)) == 2, "both workers ready")
        workers = set(ready_workers(supervisor.log))
        seen: set[int] = set()
        for n in range(CONNECTIONS_TO_SEE_BOTH):
            async with own_connection(f"127.0.0.1:{port}") as channel:
                key = f"probe-{n}"
                await pb_grpc.PaymentServiceStub(channel).Pay(pay_request(key), timeout=30)
            await wait_for(lambda: served_by(supervisor.log, key) is not None, "its log line")
            seen.add(served_by(supervisor.log, key))
            if seen == workers:
                break
        assert seen == workers, f"only {seen} of {workers} served {n + 1} connections"

        # A lone server, and a second supervisor, on the port: refused, one
        # line (on SQLite the file, held by the supervisor, is the first refusal).
        refused = (f"paygrid-server: cannot listen on 127.0.0.1:{port}"
                   if storage_engine == "postgresql" else
                   f"paygrid-server: database {database} is in use by process "
                   f"{supervisor.process.pid};")
        for extra in ((), ("--workers", "2")):
            line = refusal(serve_once("--listen", f"127.0.0.1:{port}", "--database",
                                      str(database), *extra))
            assert line.startswith(refused), line
        assert supervisor.process.poll() is None and all(map(alive, workers))

        supervisor.process.send_signal(signal.SIGTERM)
        assert supervisor.process.wait(timeout=30) == 0, supervisor.log.read_text()[-3000:]
        assert not any(map(alive, workers)), "every worker stopped with its supervisor"
    finally:
        supervisor.terminate()
        await sim_server.stop(None)


async def test_workers_stop_when_their_supervisor_is_killed(
        tmp_path: Path, storage_engine: str, postgres_databases) -> None:
    sim_server, _, sim_port = await card_simulator()
    supervisor, port = workers_process(
        tmp_path, await database_for(storage_engine, tmp_path, postgres_databases), sim_port)
    try:
        await supervisor.start(port)
        await wait_for(lambda: len(ready_workers(supervisor.log)) == 2, "both workers ready")
        workers = ready_workers(supervisor.log)
        supervisor.kill()
        # The kernel tells each worker (PR_SET_PDEATHSIG): a graceful stop.
        await wait_for(lambda: not any(map(alive, workers)), "the workers to stop")
    finally:
        supervisor.terminate()
        for pid in (w for w in ready_workers(supervisor.log) if alive(w)):
            os.kill(pid, signal.SIGKILL)  # none, unless the test failed
        await sim_server.stop(None)


def _transactions(count: int) -> list[bpb.BatchTransaction]:
    return [bpb.BatchTransaction(
        reference=f"item-{i:04d}", payee=f"employee_{i:04d}",
        amount=money_pb2.Money(currency="EUR", amount_minor=100 + i)) for i in range(count)]


@pytest.mark.postgresql_only
async def test_a_killed_worker_is_started_again_and_its_group_is_paid_once(
        tmp_path: Path, storage_engine: str, postgres_databases) -> None:
    """One group at a time per worker, charges held at the channel: the
    stream's worker holds one group, so the next is provably the other
    worker's. That one is SIGKILLed mid-charge; its charge lands anyway (as
    at a real channel). Leases are 10 minutes, far past the test's time: its
    group is taken over only because the supervisor tells the restarted
    worker which replica died, and its leases are expired at once. A live
    worker charges the group again under the same keys: each item once."""
    sim_server, card, sim_port = await card_simulator(latency_ms=5)
    card.faults.hold_charges()
    dsn = await postgres_databases.create()
    supervisor, port = workers_process(tmp_path, dsn, sim_port, batch_group_workers=1,
                                       **{**LEASES, "batch_lease_ms": 600_000})
    watch = None
    try:
        await supervisor.start(port)
        await wait_for(lambda: len(ready_workers(supervisor.log)) == 2, "both workers ready")
        workers = ready_workers(supervisor.log)
        watch = await asyncpg.connect(dsn)
        transactions = _transactions(100)
        async with own_connection(f"127.0.0.1:{port}") as channel:
            call, outgoing = open_stream(batch_stub(channel), timeout=120)
            for message in (header("split", max_group_size=25, parallelism=4),
                            chunk(*transactions), None):
                await outgoing.put(message)
            await asyncio.wait_for(card.faults.held(2), 60)
            leased = await watch.fetch("SELECT group_no, lease_owner FROM batch_groups "
                                       "WHERE status = 'LEASED'")
            owners = {int(row["lease_owner"].split(":")[-2]) for row in leased}
            assert owners == set(workers), [dict(r) for r in leased]
            stream_worker = int((await watch.fetchval(
                "SELECT submission_owner FROM batches")).split(":")[-2])
            [other] = set(workers) - {stream_worker}
            [taken] = [r["group_no"] for r in leased
                       if int(r["lease_owner"].split(":")[-2]) == other]
            os.kill(other, signal.SIGKILL)
            card.faults.release_charges()
            await card.finish_late_work()
            reply = await collect(call)
        assert reply.summary.status == bpb.BATCH_STATUS_COMPLETED, reply.summary
        assert sorted(reply.reported) == sorted(t.reference for t in transactions)
        await wait_for(lambda: len(ready_workers(supervisor.log)) == 3, "the worker's restart")
        assert not alive(other) and ready_workers(supervisor.log)[2] not in workers

        row = await watch.fetchrow("SELECT status, lease_count, processed_by FROM batch_groups "
                                   "WHERE group_no = $1", taken)
        assert row["status"] == "DONE" and row["lease_count"] >= 2, dict(row)
        assert int(row["processed_by"].split(":")[-2]) != other
        told = count_batch(transactions, reply.results, {"card": card.ledger})
        assert told.ok and told.captures == len(transactions), told.describe()
        books = reconcile(lambda sql: postgres_rows(dsn, sql), {"card": card.ledger})
        assert books.ok, str(books)
    finally:
        card.faults.release_charges()
        if watch is not None:
            await watch.close()
        supervisor.terminate()
        await sim_server.stop(None)


@pytest.mark.timeout(HANDOFF_AFTER_MS // 1_000 + 180)  # the hand-off itself is 90 s
async def test_a_payment_of_a_killed_worker_is_finished_once_after_the_hand_off(
        tmp_path: Path, storage_engine: str, postgres_databases) -> None:
    """The worker driving a Pay is SIGKILLed while its charge is held at the
    channel; the charge lands anyway. The supervisor starts the worker again;
    the payment is a live-looking replica's until HANDOFF_AFTER_MS (a retry
    is told to wait, never handed a half-settled payment), then recovery
    finds the charge (GetCharge) and the payment ends SUCCEEDED: one capture.
    Slow by design: the hand-off is 90 s."""
    sim_server, card, sim_port = await card_simulator()
    supervisor, port = workers_process(
        tmp_path, await database_for(storage_engine, tmp_path, postgres_databases), sim_port,
        recovery_interval_ms=500)
    try:
        await supervisor.start(port)
        await wait_for(lambda: len(ready_workers(supervisor.log)) == 2, "both workers ready")
        async with own_connection(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.PaymentServiceStub(channel)
            await stub.Pay(pay_request("which-worker"), timeout=30)
            await wait_for(lambda: served_by(supervisor.log, "which-worker") is not None, "log")
            driving = served_by(supervisor.log, "which-worker")  # this connection's worker
            card.faults.hold_charges()
            call = stub.Pay(pay_request("killed-mid-charge"), timeout=60)
            await asyncio.wait_for(card.faults.held(1), 60)
            os.kill(driving, signal.SIGKILL)
            card.faults.release_charges()
            await card.finish_late_work()
            with pytest.raises(grpc.aio.AioRpcError) as cut:
                await call
            assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
        await wait_for(lambda: len(ready_workers(supervisor.log)) == 3, "the worker's restart")
        started = asyncio.get_running_loop().time()
        async with own_connection(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.PaymentServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as waiting:
                await stub.Pay(pay_request("killed-mid-charge"), timeout=30)
            assert waiting.value.code() == grpc.StatusCode.ABORTED, "not taken over yet"

            async def final() -> pb.Payment:
                while True:  # PROCESSING: taken over, being settled now
                    payment = await pay_until_final(stub, pay_request("killed-mid-charge"))
                    if payment.status != pb.PAYMENT_STATUS_PROCESSING:
                        return payment
                    await asyncio.sleep(0.1)

            payment = await asyncio.wait_for(final(), HANDOFF_AFTER_MS / 1_000 + 60)
        assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED, payment
        assert asyncio.get_running_loop().time() - started < HANDOFF_AFTER_MS / 1_000 + 60
        captured = [c for c in card.ledger.captured() if c.idempotency_key.startswith(payment.payment_id)]
        assert len(captured) == 1, captured
    finally:
        card.faults.release_charges()
        supervisor.terminate()
        await sim_server.stop(None)
