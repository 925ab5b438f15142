"""The explicit end of a SubmitBatch stream (BatchEnd): the batch completes
at once, without waiting for a half-close; control totals it carries are
checked as the header's are; a bare half-close still ends a batch."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from paygrid.v1 import batch_service_pb2 as pb
from tests.support.batch_client import batch_stub, chunk, collect, header, open_stream, submit, tx
from tests.conftest import rich_status

MIXED = [tx("eur-1", currency="EUR", amount_minor=1_250),  # 12.50
         tx("eur-2", currency="EUR", amount_minor=5),  # 0.05
         tx("jpy-1", currency="JPY", amount_minor=300)]  # 300
# Without the end message the summary would never come: the client's side of
# the stream stays open. Long enough for a loaded machine, never reached.
SUMMARY_WITHIN_S = 20


def end(**totals) -> pb.SubmitBatchRequest:
    return pb.SubmitBatchRequest(end=pb.BatchEnd(**totals))


async def _summary_with_stream_open(stub, *messages: pb.SubmitBatchRequest):
    """Sends the messages and reads the answers without ever half-closing."""
    call, outgoing = open_stream(stub)
    for message in messages:
        await outgoing.put(message)
    try:
        return await asyncio.wait_for(collect(call), SUMMARY_WITHIN_S)
    finally:
        call.cancel()


async def test_the_end_message_completes_the_batch_without_a_half_close(paygrid) -> None:
    reply = await _summary_with_stream_open(batch_stub(paygrid.channel),
                                            header("ended"), chunk(*MIXED), end())
    assert reply.summary.status == pb.BATCH_STATUS_COMPLETED
    assert reply.summary.counts.succeeded == 3
    assert len(paygrid.captured_everywhere()) == 3


async def test_a_bare_half_close_still_ends_the_batch(paygrid) -> None:
    reply = await submit(batch_stub(paygrid.channel), header("half-closed"), chunk(*MIXED))
    assert reply.summary.status == pb.BATCH_STATUS_COMPLETED
    assert reply.summary.counts.succeeded == 3


@pytest.mark.parametrize("totals", [
    {"control_item_count": 3},
    {"control_sum": "312.550"},
    {"control_item_count": 3, "control_sum": "312.55"},
])
async def test_matching_totals_in_the_end_message_are_accepted(paygrid, totals) -> None:
    reply = await _summary_with_stream_open(batch_stub(paygrid.channel),
                                            header("end-totals"), chunk(*MIXED), end(**totals))
    assert reply.summary.status == pb.BATCH_STATUS_COMPLETED
    assert len(paygrid.captured_everywhere()) == 3


@pytest.mark.parametrize("totals, detail", [
    ({"control_item_count": 4}, "declared 4 transactions, received 3"),
    ({"control_item_count": 2}, "declared 2 transactions, received 3"),
    ({"control_sum": "312.56"}, "declared a control sum of 312.56, received 312.55"),
])
async def test_mismatching_totals_in_the_end_message_reject_an_uncharged_batch(
        paygrid, totals, detail) -> None:
    stub = batch_stub(paygrid.channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        # Groups of 100: the three items are still in an open group at the end.
        await _summary_with_stream_open(stub, header("end-mismatch"), chunk(*MIXED),
                                        end(**totals))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert detail in refused.value.details()
    violation = rich_status(refused.value)["PreconditionFailure"].violations[0]
    assert (violation.type, violation.subject) == ("CONTROL_TOTALS_MISMATCH", "end")
    assert paygrid.captured_everywhere() == []
    got = await stub.GetBatch(pb.GetBatchRequest(batch_id="end-mismatch"))
    assert got.batch.status == pb.BATCH_STATUS_REJECTED
    assert (got.batch.counts.total, got.batch.counts.rejected) == (3, 3)


async def test_a_mismatch_after_groups_were_charged_leaves_the_batch_as_it_is(paygrid) -> None:
    stub = batch_stub(paygrid.channel)
    call, outgoing = open_stream(stub)
    await outgoing.put(header("end-late", max_group_size=1))
    await outgoing.put(chunk(MIXED[0]))
    first = await asyncio.wait_for(call.read(), SUMMARY_WITHIN_S)
    assert first.group.items[0].status == pb.BATCH_ITEM_STATUS_SUCCEEDED  # money moved
    await outgoing.put(end(control_item_count=2))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await asyncio.wait_for(collect(call), SUMMARY_WITHIN_S)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "groups of this batch were charged before" in refused.value.details()
    got = await stub.GetBatch(pb.GetBatchRequest(batch_id="end-late"))
    assert got.batch.status == pb.BATCH_STATUS_INTERRUPTED
    assert got.batch.counts.succeeded == 1


async def test_header_and_end_totals_are_both_checked(paygrid) -> None:
    stub = batch_stub(paygrid.channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _summary_with_stream_open(stub, header("both", control_item_count=3),
                                        chunk(*MIXED), end(control_sum="1"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "declared a control sum of 1, received 312.55" in refused.value.details()
    assert paygrid.captured_everywhere() == []


@pytest.mark.parametrize("totals, field", [
    ({"control_item_count": 0}, "end.control_item_count"),
    ({"control_sum": "12,50"}, "end.control_sum"),
])
async def test_malformed_end_totals_are_invalid_argument(paygrid, totals, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _summary_with_stream_open(batch_stub(paygrid.channel), header("bad-end"),
                                        chunk(*MIXED), end(**totals))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in rich_status(refused.value)["BadRequest"].field_violations]
    assert fields == [field]
    assert paygrid.captured_everywhere() == []
