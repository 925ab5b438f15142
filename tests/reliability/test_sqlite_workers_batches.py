"""Batches on `serve --workers 2` sharing one SQLite file (issue 17, point
4): groups and batch streams are leased in the file (storage/sqlite/
group_queue.py), so the PostgreSQL replicas' guarantees hold between the
workers: a live worker's group is never taken by another, a killed
worker's group is finished by another exactly once, and a batch streamed
on one worker is refused on the other while its stream runs.

The servers are real OS processes under one supervisor on one port; the
channel simulator runs in this process as the one remote channel both
workers call, so its ledger is the channel's whole record and holding its
charges holds whichever worker charges. What a test needs to have happened
is made to happen (charges held, rows waited for), never waited for by time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from paygrid.type.v1 import money_pb2
from paygrid.v1 import batch_service_pb2 as bpb
from paygrid_server.ledger_reconciliation import reconcile, sqlite_rows
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator
from tests.conftest import rich_status
from tests.support.batch_client import batch_stub, chunk, collect, header, open_stream
from tests.support.batch_counts_check import assert_counts_match_items
from tests.support.exactly_once import count_batch
from tests.support.server_process import ServerProcess, free_port, wait_for, write_config
from tests.support.worker_log import (
    alive,
    own_connection,
    ready_workers,
    start_of,
)

pytestmark = pytest.mark.sqlite_only

LEASES = dict(batch_lease_ms=3_000, batch_lease_renew_every_ms=300, batch_claim_poll_ms=50,
              batch_progress_poll_ms=50)
# At 2^-n a connection sequence lands on one worker only: 40 is never by chance.
CONNECTIONS_TO_SEE_BOTH = 40


def _transactions(count: int) -> list[bpb.BatchTransaction]:
    return [bpb.BatchTransaction(
        reference=f"item-{i:04d}", payee=f"employee_{i:04d}",
        amount=money_pb2.Money(currency="EUR", amount_minor=100 + i)) for i in range(count)]


class Workers:
    """`serve --workers 2` on a SQLite file, calling one card simulator."""

    def __init__(self, tmp_path: Path, sim_port: int, **server: int) -> None:
        self.database = tmp_path / "paygrid.sqlite3"
        self.port = free_port()
        config = write_config(tmp_path / "paygrid.toml", self.port, self.database,
                              {"card": sim_port}, **server)
        self.process = ServerProcess(config, tmp_path / "paygrid.log", ("--workers", "2"))

    async def start(self) -> list[int]:
        await self.process.start(self.port)
        await wait_for(lambda: len(ready_workers(self.process.log)) == 2, "both workers ready")
        return ready_workers(self.process.log)

    def rows(self, sql: str, *params) -> list[tuple]:
        with sqlite3.connect(self.database, timeout=30) as db:
            return db.execute(sql, params).fetchall()

    async def aborted_batch_streams(self, pid: int) -> float:
        """SubmitBatch calls worker `pid` ended ABORTED (its own /metrics)."""
        port = (await start_of(self.process.log, pid))["metrics_port"]
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            page = reply.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
                   if line.startswith("paygrid_grpc_server_handled_total{")
                   and 'grpc_code="ABORTED"' in line and 'grpc_method="SubmitBatch"' in line)


async def _whole_batch(channel: grpc.aio.Channel, batch_id: str,
                       transactions: list[bpb.BatchTransaction], max_group_size: int,
                       parallelism: int):
    """A stream that has sent the whole batch (header, items, end): its call."""
    call, outgoing = open_stream(batch_stub(channel), timeout=120)
    for message in (header(batch_id, max_group_size=max_group_size, parallelism=parallelism),
                    chunk(*transactions), None):
        await outgoing.put(message)
    return call


def _each_item_charged_once(workers, transactions, reply, card) -> None:
    """What the client was told and what the file holds both equal the
    channel's ledger: every item charged once."""
    told = count_batch(transactions, reply.results, {"card": card.ledger})
    assert told.ok and told.captures == len(transactions), told.describe()
    books = reconcile(sqlite_rows(workers.database), {"card": card.ledger})
    assert books.ok, str(books)
    assert assert_counts_match_items(workers.database) == 1  # kept counts, after takeovers


def _pid(owner: str) -> int:
    return int(owner.split(":")[-2])


async def test_a_live_workers_groups_are_never_taken_and_every_item_is_paid_once(
        tmp_path: Path) -> None:
    """Parallelism 3, five groups, charges held at the channel: three groups
    leased, two queued, and both workers keep trying to claim (each has free
    group workers). Once each worker has claimed again after the first
    lease of every held group would have run out, the held groups are still
    their first holders' (claimed once): renewed leases are never taken.
    Released, the batch completes with every item charged once."""
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour(latency_ms=2))
    card.faults.hold_charges()
    workers = Workers(tmp_path, sim_port, batch_group_workers=4,
                      **{**LEASES, "batch_lease_ms": 1_000, "batch_lease_renew_every_ms": 200})
    try:
        pids = await workers.start()
        transactions = _transactions(125)
        async with own_connection(f"127.0.0.1:{workers.port}") as channel:
            call = await _whole_batch(channel, "never-taken", transactions, 25, 3)
            await asyncio.wait_for(card.faults.held(3), 60)
            leased = workers.rows("SELECT group_no, lease_owner, lease_count FROM batch_groups "
                                  "WHERE status = 'LEASED' ORDER BY group_no")
            assert len(leased) == 3 and {r[2] for r in leased} == {1}, leased
            # Every held group's first lease ends by then (claimed before now).
            first_leases_end_us = time.time_ns() // 1_000 + 1_000_000
            await wait_for(lambda: len(workers.rows(
                "SELECT owner FROM batch_replicas WHERE seen_at_us > ?",
                first_leases_end_us)) == 2, "both workers to claim after the first leases' end",
                timeout_s=60)
            assert workers.rows("SELECT group_no, lease_owner, lease_count FROM batch_groups "
                                "WHERE status = 'LEASED' ORDER BY group_no") == leased
            card.faults.release_charges()
            reply = await collect(call)
        assert reply.summary.status == bpb.BATCH_STATUS_COMPLETED, reply.summary
        assert sorted(reply.reported) == sorted(t.reference for t in transactions)
        assert {_pid(o) for (o,) in workers.rows("SELECT owner FROM batch_replicas")} == \
            set(pids)
        _each_item_charged_once(workers, transactions, reply, card)
    finally:
        card.faults.release_charges()
        workers.process.terminate()
        await sim_server.stop(None)


async def test_a_killed_worker_is_started_again_and_its_group_is_paid_once(
        tmp_path: Path) -> None:
    """One group at a time per worker, charges held at the channel: the
    stream's worker holds one group, so the next is provably the other
    worker's. That one is SIGKILLed mid-charge; its charge lands anyway (as
    at a real channel). Leases are 10 minutes: its group is taken over only
    because the supervisor tells the restarted worker which worker died, and
    its leases are expired at once. The group is charged again under the
    same keys: each item once."""
    sim_server, card, sim_port = await start_simulator("card",
                                                       SimulatorBehaviour(latency_ms=5))
    card.faults.hold_charges()
    workers = Workers(tmp_path, sim_port, batch_group_workers=1,
                      **{**LEASES, "batch_lease_ms": 600_000})
    try:
        pids = await workers.start()
        transactions = _transactions(100)
        async with own_connection(f"127.0.0.1:{workers.port}") as channel:
            call = await _whole_batch(channel, "split", transactions, 25, 4)
            await asyncio.wait_for(card.faults.held(2), 60)
            await wait_for(lambda: len(workers.rows(
                "SELECT 1 FROM batch_groups WHERE status = 'LEASED'")) == 2, "two groups leased")
            leased = workers.rows("SELECT group_no, lease_owner FROM batch_groups "
                                  "WHERE status = 'LEASED'")
            assert {_pid(owner) for _, owner in leased} == set(pids), leased
            [(stream_owner,)] = workers.rows("SELECT submission_owner FROM batches")
            [other] = set(pids) - {_pid(stream_owner)}
            [taken] = [group_no for group_no, owner in leased if _pid(owner) == other]
            os.kill(other, signal.SIGKILL)
            card.faults.release_charges()
            await card.finish_late_work()
            reply = await collect(call)
        assert reply.summary.status == bpb.BATCH_STATUS_COMPLETED, reply.summary
        assert sorted(reply.reported) == sorted(t.reference for t in transactions)
        await wait_for(lambda: len(ready_workers(workers.process.log)) == 3,
                       "the worker's restart")
        assert not alive(other) and ready_workers(workers.process.log)[2] not in pids

        [(status, lease_count, processed_by)] = workers.rows(
            "SELECT status, lease_count, processed_by FROM batch_groups WHERE group_no = ?",
            taken)
        assert status == "DONE" and lease_count >= 2, (status, lease_count)
        assert _pid(processed_by) != other
        _each_item_charged_once(workers, transactions, reply, card)
    finally:
        card.faults.release_charges()
        workers.process.terminate()
        await sim_server.stop(None)


async def test_a_batch_streaming_on_one_worker_is_refused_on_the_other(
        tmp_path: Path) -> None:
    """The stream's worker holds the batch's submission lease (charges held:
    its stream provably still runs). A resubmission is refused ABORTED with
    a retry delay on either worker, as between PostgreSQL replicas: on the
    stream's own by its in-flight check, on the other by the lease. Each
    try is a connection of its own; the workers' /metrics say that the other
    worker refused at least one."""
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour())
    card.faults.hold_charges()
    workers = Workers(tmp_path, sim_port, **LEASES)
    try:
        pids = await workers.start()
        async with own_connection(f"127.0.0.1:{workers.port}") as channel:
            call, outgoing = open_stream(batch_stub(channel), timeout=120)
            for message in (header("busy", max_group_size=5, parallelism=1),
                            chunk(*_transactions(5))):
                await outgoing.put(message)
            await asyncio.wait_for(card.faults.held(1), 60)
            [(stream_owner,)] = workers.rows("SELECT submission_owner FROM batches")
            [other] = set(pids) - {_pid(stream_owner)}
            for _ in range(CONNECTIONS_TO_SEE_BOTH):
                async with own_connection(f"127.0.0.1:{workers.port}") as second_channel:
                    second, second_out = open_stream(batch_stub(second_channel), timeout=30)
                    # Only the header: a refusal while the client still writes
                    # can reach it as INTERNAL (test_batch_replicas.py).
                    await second_out.put(header("busy", max_group_size=5, parallelism=1))
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await collect(second)
                assert refused.value.code() == grpc.StatusCode.ABORTED, refused.value.details()
                assert "RetryInfo" in rich_status(refused.value)
                if await workers.aborted_batch_streams(other):
                    break
            assert await workers.aborted_batch_streams(other) >= 1
            # The first stream runs on, undisturbed.
            card.faults.release_charges()
            await outgoing.put(None)
            reply = await collect(call)
        assert reply.summary.status == bpb.BATCH_STATUS_COMPLETED, reply.summary
        assert reply.summary.counts.succeeded == 5
    finally:
        card.faults.release_charges()
        workers.process.terminate()
        await sim_server.stop(None)
