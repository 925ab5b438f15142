"""Real-time payments before batch work across `serve --workers 2`
(worker_payment_counts.py, domain/payments_first.py): while a caller waits
for a Pay on worker A, worker B's batch steps wait for it too, since the
workers share the cores and the SQLite file's write turn; once that Pay has
ended, or its worker was killed, nothing holds B's batches back.

Real processes on one file, one card simulator in this process whose held
charges make "a Pay is running on A" happen; B's own /metrics counts the
steps that waited."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import grpc
import pytest

from paygrid.v1 import batch_service_pb2 as bpb
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from tests.api.test_metrics import scrape
from tests.api.test_payments_first import STEPS
from tests.conftest import pay_request
from tests.reliability.test_sqlite_workers import two_workers
from tests.reliability.test_workers import _transactions
from tests.support.batch_client import batch_stub, chunk, collect, header, open_stream, submit
from tests.support.server_process import wait_for
from tests.support.worker_log import start_of

pytestmark = pytest.mark.sqlite_only

ITEMS = 10


async def steps_yielded(log: Path, pid: int) -> float:
    """Worker `pid`'s batch steps that waited for payments (its own /metrics)."""
    return (await scrape((await start_of(log, pid))["metrics_port"])).value(STEPS)


def items_stored(database: Path, batch_id: str) -> int:
    with sqlite3.connect(database, timeout=30) as db:
        return db.execute("SELECT count(*) FROM batch_items i JOIN batches b"
                          " ON b.item_key = i.batch_key WHERE b.batch_id = ?",
                          (batch_id,)).fetchone()[0]


async def test_a_pay_on_one_worker_holds_back_the_other_worker_s_batch_steps(
        tmp_path: Path) -> None:
    async with two_workers(tmp_path, batch_yield_to_payments_ms=50) as rig:
        by_worker = await rig.by_worker()
        paying, batching = by_worker
        batches = batch_stub(by_worker[batching])

        async def batch_waits_nothing(batch_id: str) -> None:
            before = await steps_yielded(rig.log, batching)
            reply = await submit(batches, header(batch_id, max_group_size=5),
                                 chunk(*_transactions(ITEMS)))
            assert reply.summary.status == bpb.BATCH_STATUS_COMPLETED, reply.summary
            assert await steps_yielded(rig.log, batching) == before

        # A Pay runs on A: B stores the batch's items only after waiting.
        rig.card.faults.hold_charges()
        held = pb_grpc.PaymentServiceStub(by_worker[paying]).Pay(
            pay_request("held-on-a"), timeout=60)
        await asyncio.wait_for(rig.card.faults.held(1), 60)
        assert await steps_yielded(rig.log, batching) == 0
        call, outgoing = open_stream(batches, timeout=120)
        for message in (header("while-a-pays", max_group_size=5), chunk(*_transactions(ITEMS)),
                        None):
            await outgoing.put(message)
        await wait_for(lambda: items_stored(tmp_path / "paygrid.sqlite3", "while-a-pays") == ITEMS,
                       "B's items stored")
        assert await steps_yielded(rig.log, batching) >= 1
        rig.card.faults.release_charges()
        assert (await held).payment.status == pb.PAYMENT_STATUS_SUCCEEDED
        assert (await collect(call)).summary.status == bpb.BATCH_STATUS_COMPLETED

        # A's Pay ended: B's next batch waits for nothing.
        await batch_waits_nothing("after-a-paid")

        # A dies while its caller waits: its count dies with it.
        held_before = rig.card.faults.charges_held  # the batch's were held too
        rig.card.faults.hold_charges()
        dying = pb_grpc.PaymentServiceStub(by_worker[paying]).Pay(
            pay_request("held-on-a-killed"), timeout=60)
        await asyncio.wait_for(rig.card.faults.held(held_before + 1), 60)
        await rig.kill_and_restart(paying)
        rig.card.faults.release_charges(drop=True)
        with pytest.raises(grpc.aio.AioRpcError):
            await dying
        await batch_waits_nothing("after-a-died")
