"""SubmitBatch, GetBatch and ListBatchItems against a real server, real
channel simulators and a real SQLite file."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from paygrid.v1 import batch_service_pb2 as pb
from tests.support.batch_client import (batch_stub, chunk, collect, header, open_stream,
                                        resubmit, submit, tx)
from tests.conftest import channel, rich_status, slow


async def test_items_are_grouped_by_channel_and_currency_with_capped_size(paygrid) -> None:
    stub = batch_stub(paygrid.channel)
    items = [tx(f"r{i:03d}", currency=("EUR", "USD")[i % 2]) for i in range(50)]
    items += [tx(f"c{i:03d}", currency="CHF") for i in range(5)]  # only bank_transfer takes CHF
    reply = await submit(stub, header(max_group_size=10), chunk(*items))
    assert reply.summary.status == pb.BATCH_STATUS_COMPLETED
    assert reply.summary.counts.total == 55 and reply.summary.counts.succeeded == 55
    keys = {}
    for group in reply.groups:
        assert 1 <= len(group.items) <= 10
        keys.setdefault(group.group_key, 0)
        keys[group.group_key] += len(group.items)
    assert keys == {"card/EUR": 25, "card/USD": 25, "bank_transfer/CHF": 5}
    assert sorted(g.group_no for g in reply.groups) == list(range(1, len(reply.groups) + 1))
    assert len(paygrid.captured_everywhere()) == 55
    assert {r.channel for r in reply.results.values()} == {"card", "bank_transfer"}


async def test_groups_run_in_parallel(start_paygrid) -> None:
    # The channel holds every charge: with parallelism 4, all four groups'
    # charges are at the channel at once before any is answered (one group
    # at a time would never get past 5).
    paygrid = await start_paygrid((channel("card", timeout_ms=60_000),))
    card = paygrid.simulator("card")
    card.faults.hold_charges()
    submitted = asyncio.create_task(submit(
        batch_stub(paygrid.channel), header(max_group_size=5, parallelism=4),
        chunk(*(tx(f"r{i}", currency="EUR") for i in range(20)))))
    await card.wait_until(lambda: card.charges_in_progress == 20, "every group at the channel")
    card.faults.release_charges()
    reply = await submitted
    assert len(reply.groups) == 4
    assert reply.summary.counts.succeeded == 20
    # So the groups' processing times overlap: each started before any ended.
    assert max(g.started_at.ToMicroseconds() for g in reply.groups) < min(
        g.completed_at.ToMicroseconds() for g in reply.groups)


async def test_group_results_stream_before_the_batch_ends(paygrid) -> None:
    stub = batch_stub(paygrid.channel)
    call, outgoing = open_stream(stub)
    await outgoing.put(header(max_group_size=3))
    await outgoing.put(chunk(tx("a1"), tx("a2"), tx("a3")))
    first = await call.read()  # the stream is still open: more is to come
    assert first.WhichOneof("kind") == "group"
    assert [r.reference for r in first.group.items] == ["a1", "a2", "a3"]
    got = await stub.GetBatch(pb.GetBatchRequest(batch_id="batch-1"))
    assert got.batch.status == pb.BATCH_STATUS_RECEIVING
    await outgoing.put(chunk(tx("b1")))
    await outgoing.put(None)
    rest = await collect(call)
    assert [r.reference for g in rest.groups for r in g.items] == ["b1"]
    assert rest.summary.counts.total == 4


async def test_summary_and_trailing_metadata_carry_apt_and_throughput(paygrid) -> None:
    reply = await submit(batch_stub(paygrid.channel), header(max_group_size=7),
                         *(chunk(tx(f"r{i}")) for i in range(30)))  # one item per message
    summary = reply.summary
    assert summary.counts.total == 30 and summary.timing.groups == len(reply.groups) == 5
    apt_us = sum(g.processing_time.ToMicroseconds() for g in reply.groups) // len(reply.groups)
    assert summary.timing.average_processing_time.ToMicroseconds() == apt_us
    wall_s = summary.timing.wall_time.ToMicroseconds() / 1e6
    assert summary.timing.throughput_items_per_second == pytest.approx(30 / wall_s)
    assert float(reply.trailers["x-paygrid-apt-ms"]) == pytest.approx(apt_us / 1_000, abs=0.001)
    assert float(reply.trailers["x-paygrid-throughput"]) == pytest.approx(
        summary.timing.throughput_items_per_second, abs=0.1)
    assert float(reply.trailers["x-paygrid-wall-ms"]) == pytest.approx(wall_s * 1_000, abs=0.001)
    # The source's model figure beside the measured one: T = N / M, M the APT.
    model = summary.timing.model_throughput_items_per_second
    assert model == pytest.approx(30 / (apt_us / 1e6))
    assert float(reply.trailers["x-paygrid-model-throughput"]) == pytest.approx(model, abs=0.1)


async def test_model_throughput_is_zero_when_no_group_ran(paygrid) -> None:
    reply = await submit(batch_stub(paygrid.channel), header(),
                         chunk(tx("bad", currency="EURO")))  # rejected on arrival
    assert reply.summary.counts.rejected == 1 and reply.summary.timing.groups == 0
    assert reply.summary.timing.model_throughput_items_per_second == 0
    assert reply.trailers["x-paygrid-model-throughput"] == "0.0"


async def test_bad_items_are_rejected_one_by_one_and_the_rest_proceeds(paygrid) -> None:
    stub = batch_stub(paygrid.channel)
    reply = await submit(stub, header(), chunk(
        tx("ok-1"),
        tx("bad-currency", currency="EURO"),
        tx("bad-amount", amount_minor=0),
        tx("bad-payee", payee=""),
        tx("bad-channel", channel="carrier_pigeon"),
        tx("ok-1", payee="someone_else"),  # duplicate reference
        tx(""),  # no reference at all
        tx("declined", payee="decline_insufficient_funds"),
        tx("ok-2"),
    ))
    reasons = {r.reference: r.failure.reason for r in reply.rejected}
    assert reasons == {"bad-currency": "INVALID_ITEM", "bad-amount": "INVALID_ITEM",
                       "bad-payee": "INVALID_ITEM", "bad-channel": "INVALID_ITEM",
                       "ok-1": "DUPLICATE_REFERENCE", "": "INVALID_ITEM"}
    assert "amount.currency" in next(r for r in reply.rejected
                                     if r.reference == "bad-currency").failure.message
    results = reply.results
    assert results["ok-1"].status == pb.BATCH_ITEM_STATUS_SUCCEEDED
    assert results["ok-2"].status == pb.BATCH_ITEM_STATUS_SUCCEEDED
    assert results["declined"].status == pb.BATCH_ITEM_STATUS_FAILED
    assert results["declined"].failure.decline_code == "insufficient_funds"
    counts = reply.summary.counts
    assert (counts.total, counts.succeeded, counts.failed, counts.rejected, counts.pending) == (
        9, 2, 1, 6, 0)
    assert reply.summary.status == pb.BATCH_STATUS_COMPLETED

    stored = [item async for page in stub.ListBatchItems(pb.ListBatchItemsRequest(
        batch_id="batch-1", status=pb.BATCH_ITEM_STATUS_REJECTED)) for item in page.items]
    # Stored rejections are those with a usable, first-seen reference.
    assert [i.transaction.reference for i in stored] == [
        "bad-currency", "bad-amount", "bad-payee", "bad-channel"]
    assert stored[0].transaction.amount.currency == "EURO"


async def test_list_batch_items_streams_everything_for_reconciliation(paygrid) -> None:
    stub = batch_stub(paygrid.channel)
    await submit(stub, header(), chunk(*(tx(f"r{i:04d}") for i in range(1_000))),
                 chunk(*(tx(f"s{i:04d}") for i in range(500))))
    pages = [page async for page in stub.ListBatchItems(pb.ListBatchItemsRequest(
        batch_id="batch-1"))]
    items = [item for page in pages for item in page.items]
    assert [len(p.items) for p in pages] == [1_000, 500]
    assert len({i.transaction.reference for i in items}) == 1_500
    captured = {c.charge_id for c in paygrid.ledger("card").captured()}
    assert {i.result.channel_reference for i in items} == captured


async def test_resume_after_a_cancelled_stream_processes_each_item_once(start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card"),))
    card = paygrid.simulator("card")
    # The first group is paid, the second waits at the channel: the client
    # drops mid-batch however fast or slow the machine.
    card.faults.hold_charges(after_calls=1)
    stub = batch_stub(paygrid.channel)
    items = [tx(f"r{i:02d}", payee=f"payee_{i:02d}") for i in range(60)]
    call, outgoing = open_stream(stub)  # never half-closed: the client drops mid-batch
    for message in (header(max_group_size=10, parallelism=1), *(chunk(item) for item in items)):
        await outgoing.put(message)
    first = await call.read()
    assert first.WhichOneof("kind") == "group"
    await asyncio.wait_for(card.faults.held(1), 60)
    call.cancel()
    card.faults.release_charges()
    await _wait_for_status(stub, pb.BATCH_STATUS_INTERRUPTED)
    before = await stub.GetBatch(pb.GetBatchRequest(batch_id="batch-1"))
    assert 10 <= before.batch.counts.succeeded < 60

    reply = await resubmit(stub, header(max_group_size=10, parallelism=1), chunk(*items))
    assert reply.summary.status == pb.BATCH_STATUS_COMPLETED
    assert reply.summary.counts.succeeded == 60 and reply.summary.counts.total == 60
    assert len(reply.already_processed) >= 10  # stored results, not charged again
    assert sorted(reply.reported) == [f"r{i:02d}" for i in range(60)]  # each told once
    captured = paygrid.ledger("card").captured()
    assert sorted(c.payee for c in captured) == sorted(f"payee_{i:02d}" for i in range(60))
    assert all(n == 1 for n in paygrid.ledger("card").charge_requests.values())
    assert (await stub.GetBatch(pb.GetBatchRequest(batch_id="batch-1"))).batch.submissions == 2


async def test_batch_id_reused_with_another_header_is_failed_precondition(paygrid) -> None:
    stub = batch_stub(paygrid.channel)
    await submit(stub, header(payer="acct_a"), chunk(tx("r1")))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await submit(stub, header(payer="acct_b"), chunk(tx("r2")))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rich_status(error.value)["ErrorInfo"].reason == "BATCH_ID_REUSED"


async def test_a_batch_open_in_another_stream_is_aborted(start_paygrid) -> None:
    paygrid = await start_paygrid((channel("card", simulator=slow(200)),))
    stub = batch_stub(paygrid.channel)
    first, outgoing = open_stream(stub)
    await outgoing.put(header())
    await outgoing.put(chunk(tx("r1")))
    await _wait_for_status(stub, pb.BATCH_STATUS_RECEIVING)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await submit(stub, header(), chunk(tx("r1")))
    assert error.value.code() == grpc.StatusCode.ABORTED
    assert rich_status(error.value)["RetryInfo"].retry_delay.ToMilliseconds() > 0
    await outgoing.put(None)
    assert (await collect(first)).summary.counts.succeeded == 1


@pytest.mark.parametrize(("messages", "field"), [
    ([chunk(tx("r1"))], "header"),
    ([header(), header()], "header"),
    ([header(), chunk()], "transactions.transactions"),
    ([header(), chunk(*(tx(f"r{i}") for i in range(1_001)))], "transactions.transactions"),
    ([header(batch_id="")], "header.batch_id"),
    ([header(max_group_size=1_001)], "header.max_group_size"),
    ([header(parallelism=17)], "header.parallelism"),
    ([header(grouping=9)], "header.grouping"),
])
async def test_broken_streams_are_invalid_argument(paygrid, messages, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await submit(batch_stub(paygrid.channel), *messages)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [v.field for v in rich_status(error.value)["BadRequest"].field_violations]
    assert paygrid.captured_everywhere() == []


async def test_unknown_batch_is_not_found(paygrid) -> None:
    stub = batch_stub(paygrid.channel)
    for call in (stub.GetBatch(pb.GetBatchRequest(batch_id="nope")),
                 _drain(stub.ListBatchItems(pb.ListBatchItemsRequest(batch_id="nope")))):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def _drain(stream) -> list:
    return [message async for message in stream]


async def _wait_for_status(stub, status: int, timeout_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            got = await stub.GetBatch(pb.GetBatchRequest(batch_id="batch-1"))
            if got.batch.status == status:
                return
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        assert asyncio.get_running_loop().time() < deadline, f"batch never reached {status}"
        await asyncio.sleep(0.02)
