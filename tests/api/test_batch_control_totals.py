"""Control totals (pain.001 NbOfTxs / CtrlSum) declared in a batch header:
nothing is charged before the stream ends and its totals match; a mismatch
rejects the batch before any money moves."""

from __future__ import annotations

import grpc
import pytest

from paygrid.v1 import batch_service_pb2 as pb
from paygrid_server.storage.single_process_group_queue import SingleProcessGroupQueue
from paygrid_server.storage.postgres.group_queue import PostgresGroupQueue
from paygrid.v1.event_service_pb2 import ListEventsRequest
from paygrid.v1.event_service_pb2_grpc import EventServiceStub
from tests.support.batch_client import (batch_stub, chunk, collect, header, open_stream,
                                        resubmit, submit, tx)
from tests.conftest import rich_status
from tests.support.server_process import wait_for

MIXED = [tx("eur-1", currency="EUR", amount_minor=1_250),  # 12.50
         tx("eur-2", currency="EUR", amount_minor=5),  # 0.05
         tx("jpy-1", currency="JPY", amount_minor=300)]  # 300


async def test_items_are_held_until_the_stream_ends_and_its_totals_match(
        paygrid, monkeypatch) -> None:
    # Every group the batch forms passes through its group queue (in memory on
    # SQLite, a table on PostgreSQL): noting each one there shows whether the
    # held items were grouped, without waiting to see if a charge shows up.
    queued: list[int] = []

    def noting(queue_group):
        async def queue_and_note(self, batch_uid, group, parallelism):
            queued.append(group.group_no)
            return await queue_group(self, batch_uid, group, parallelism)
        return queue_and_note

    for queue in (SingleProcessGroupQueue, PostgresGroupQueue):
        monkeypatch.setattr(queue, "queue_group", noting(queue.queue_group))
    stub = batch_stub(paygrid.channel)
    call, outgoing = open_stream(stub)
    # Groups of one: without the hold, each item would be grouped (and charged) at once.
    await outgoing.put(header("held", control_item_count=3, control_sum="312.55",
                              max_group_size=1))
    await outgoing.put(chunk(*MIXED[:2]))
    await wait_for(lambda: paygrid.rows("SELECT count(*) FROM batch_items")[0][0] == 2,
                   "the first items to be stored")
    # A batch takes its messages in order and groups what it stored before it
    # reads the next one: once the last item is stored, the first two have
    # been through grouping, so a group of theirs would be queued by now.
    await outgoing.put(chunk(MIXED[2]))
    await wait_for(lambda: paygrid.rows("SELECT count(*) FROM batch_items")[0][0] == 3,
                   "the last item to be stored")
    assert queued == []
    got = await stub.GetBatch(pb.GetBatchRequest(batch_id="held"))
    assert got.batch.status == pb.BATCH_STATUS_RECEIVING
    assert got.batch.counts.pending == 3
    assert paygrid.captured_everywhere() == []  # stored, not charged: the totals are unchecked

    await outgoing.put(None)
    reply = await collect(call)
    assert reply.summary.status == pb.BATCH_STATUS_COMPLETED
    assert reply.summary.counts.succeeded == 3
    assert len(queued) == 3  # grouped once the totals matched
    assert sorted(c.payee for c in paygrid.captured_everywhere()) == sorted(
        t.payee for t in MIXED)


@pytest.mark.parametrize("control", [
    {"control_item_count": 3},
    {"control_sum": "312.550"},  # the same decimal, written otherwise
    {"control_item_count": 3, "control_sum": "312.55"},
])
async def test_either_total_alone_is_checked(paygrid, control) -> None:
    reply = await submit(batch_stub(paygrid.channel), header("one-total", **control),
                         chunk(*MIXED))
    assert reply.summary.status == pb.BATCH_STATUS_COMPLETED
    assert len(paygrid.captured_everywhere()) == 3


@pytest.mark.parametrize("control, detail", [
    ({"control_item_count": 4}, "declared 4 transactions, received 3"),
    ({"control_sum": "312.56"}, "declared a control sum of 312.56, received 312.55"),
])
async def test_a_mismatch_rejects_the_batch_and_charges_nothing(paygrid, control, detail) -> None:
    stub = batch_stub(paygrid.channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await submit(stub, header("mismatch", **control), chunk(*MIXED))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert detail in refused.value.details()
    violation = rich_status(refused.value)["PreconditionFailure"].violations[0]
    assert violation.type == "CONTROL_TOTALS_MISMATCH"
    assert paygrid.captured_everywhere() == []

    got = await stub.GetBatch(pb.GetBatchRequest(batch_id="mismatch"))
    assert got.batch.status == pb.BATCH_STATUS_REJECTED
    assert (got.batch.counts.total, got.batch.counts.rejected) == (3, 3)
    # Its events end with batch.rejected, its snapshot the stored batch.
    events = (await EventServiceStub(paygrid.channel).ListEvents(
        ListEventsRequest(type_prefix="io.paygrid.batch."))).events
    assert [(e.type, e.aggregate_version) for e in events] == [
        ("io.paygrid.batch.created.v1", 1), ("io.paygrid.batch.rejected.v1", 2)]
    rejected = pb.Batch()
    assert events[-1].data.Unpack(rejected) and rejected == got.batch
    items = [i async for page in stub.ListBatchItems(pb.ListBatchItemsRequest(
        batch_id="mismatch")) for i in page.items]
    assert {(i.result.status, i.result.failure.reason) for i in items} == {
        (pb.BATCH_ITEM_STATUS_REJECTED, "CONTROL_TOTALS_MISMATCH")}

    # Final: the corrected batch needs a new batch_id.
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await submit(stub, header("mismatch", **control), chunk(*MIXED))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rich_status(again.value)["PreconditionFailure"].violations[0].type == "BATCH_REJECTED"
    assert paygrid.captured_everywhere() == []


async def test_a_resubmission_is_checked_against_its_own_stream(paygrid) -> None:
    stub = batch_stub(paygrid.channel)
    first = header("resumed", control_item_count=3)
    call, outgoing = open_stream(stub)
    await outgoing.put(first)
    await outgoing.put(chunk(*MIXED[:2]))
    await wait_for(lambda: paygrid.rows("SELECT count(*) FROM batch_items")[0][0] == 2,
                   "the first items to be stored")
    call.cancel()  # the stream drops before the client sent everything
    await wait_for(lambda: paygrid.rows("SELECT status FROM batches") == [("INTERRUPTED",)],
                   "the submission to stop")
    assert paygrid.captured_everywhere() == []

    reply = await resubmit(stub, first, chunk(*MIXED))  # the whole batch again
    assert reply.summary.status == pb.BATCH_STATUS_COMPLETED
    assert reply.summary.counts.succeeded == 3
    assert len(paygrid.captured_everywhere()) == 3


async def test_other_totals_for_the_same_batch_id_are_another_batch(paygrid) -> None:
    stub = batch_stub(paygrid.channel)
    await submit(stub, header("fixed", control_item_count=3), chunk(*MIXED))
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await submit(stub, header("fixed", control_item_count=4), chunk(*MIXED))
    assert reused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rich_status(reused.value)["PreconditionFailure"].violations[0].type == "BATCH_ID_REUSED"


@pytest.mark.parametrize("control, field", [
    ({"control_item_count": 0}, "header.control_item_count"),
    ({"control_item_count": 5_000_001}, "header.control_item_count"),
    ({"control_sum": "-12.50"}, "header.control_sum"),
    ({"control_sum": "1e3"}, "header.control_sum"),
    ({"control_sum": "12,50"}, "header.control_sum"),
    ({"control_sum": "1234567890123456789"}, "header.control_sum"),  # 19 digits
    ({"control_sum": "0.123456789012345678"}, "header.control_sum"),  # 18 after the point
])
async def test_malformed_totals_are_invalid_argument(paygrid, control, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        # The header alone: the stream is refused at once, and a client still
        # writing when that happens may see its own INTERNAL write error.
        await submit(batch_stub(paygrid.channel), header("bad-totals", **control))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in rich_status(refused.value)["BadRequest"].field_violations]
    assert fields == [field]
    assert paygrid.rows("SELECT count(*) FROM batches") == [(0,)]
