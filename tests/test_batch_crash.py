"""A batch whose server is SIGKILLed mid-way is finished by resubmitting it:
every item charged exactly once, as the channel's own ledger shows."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import grpc

from paygrid.v1 import batch_service_pb2 as pb
from paygrid_server.api_key_metadata import keyed_channel
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator
from tests.batch_client import batch_stub, chunk, header, open_stream, submit, tx
from tests.server_process import ServerProcess, free_port, write_config

ITEMS = 3_000


async def test_resume_after_the_server_is_killed_mid_batch(tmp_path: Path) -> None:
    sim_server, card, sim_port = await start_simulator("card", SimulatorBehaviour(latency_ms=5))
    port = free_port()
    database = tmp_path / "paygrid.sqlite3"
    config = write_config(tmp_path / "paygrid.toml", port, database, {"card": sim_port})
    server = ServerProcess(config, tmp_path / "server.log")
    items = [tx(f"pay-{i:05d}", payee=f"employee_{i:05d}", amount_minor=1_000 + i)
             for i in range(ITEMS)]
    messages = [header("payroll-2026-11", max_group_size=50, parallelism=2),
                *(chunk(*items[i:i + 100]) for i in range(0, ITEMS, 100))]
    try:
        await server.start(port)
        async with keyed_channel(f"127.0.0.1:{port}") as channel:
            call, outgoing = open_stream(batch_stub(channel))
            for message in messages:
                await outgoing.put(message)
            groups = 0
            while groups < 5:
                response = await call.read()
                groups += response.WhichOneof("kind") == "group"
            server.kill()
        with sqlite3.connect(database) as db:
            statuses = dict(db.execute("SELECT status, count(*) FROM batch_items GROUP BY status"))
        # Killed mid-way: some items paid, others stored but not finished.
        assert statuses.get("SUCCEEDED", 0) >= 250
        assert statuses.get("PROCESSING", 0) + statuses.get("RECEIVED", 0) > 0

        await server.start(port)
        async with keyed_channel(f"127.0.0.1:{port}") as channel:
            stub = batch_stub(channel)
            stopped = await stub.GetBatch(pb.GetBatchRequest(batch_id="payroll-2026-11"))
            assert stopped.batch.status == pb.BATCH_STATUS_INTERRUPTED
            reply = await submit(stub, *messages)
            assert reply.summary.status == pb.BATCH_STATUS_COMPLETED
            counts = reply.summary.counts
            assert (counts.total, counts.succeeded, counts.pending) == (ITEMS, ITEMS, 0)
            assert sorted(reply.reported) == sorted(i.reference for i in items)  # each told once
            stored = [item async for page in stub.ListBatchItems(
                pb.ListBatchItemsRequest(batch_id="payroll-2026-11")) for item in page.items]
    finally:
        server.terminate()
        await sim_server.stop(None)

    captured = card.ledger.captured()
    # 0 lost, 0 duplicated: each employee paid once, for the right amount.
    assert Counter(c.payee for c in captured) == Counter(f"employee_{i:05d}" for i in range(ITEMS))
    assert {c.payee: c.amount.amount_minor for c in captured} == {
        f"employee_{i:05d}": 1_000 + i for i in range(ITEMS)}
    assert {i.result.channel_reference for i in stored} == {c.charge_id for c in captured}
    assert all(i.result.status == pb.BATCH_ITEM_STATUS_SUCCEEDED for i in stored)
