"""Batch failure policies against a real server and channel simulators:
CONTINUE (the default), STOP_ON_FIRST_FAILURE and ALL_OR_NOTHING_PER_GROUP,
checked on the channel's own ledger."""

from __future__ import annotations

import grpc
import pytest

from paygrid.v1 import batch_service_pb2 as pb
from paygrid_server.domain.ports.payment_channel import ChargeStatus
from tests.support.batch_client import batch_stub, chunk, collect, header, open_stream, submit, tx
from tests.conftest import rich_status

STOP = pb.FAILURE_POLICY_STOP_ON_FIRST_FAILURE
WHOLE_GROUPS = pb.FAILURE_POLICY_ALL_OR_NOTHING_PER_GROUP


def _statuses(reply) -> dict[str, tuple[int, str]]:
    return {ref: (r.status, r.failure.reason) for ref, r in reply.results.items()}


SUCCEEDED = (pb.BATCH_ITEM_STATUS_SUCCEEDED, "")


async def test_continue_tries_every_item(paygrid) -> None:
    items = [tx("ok-1"), tx("no-1", payee="decline_do_not_honor"), tx("ok-2")]
    reply = await submit(batch_stub(paygrid.channel), header("continue", max_group_size=1,
                                                             parallelism=1), chunk(*items))
    assert _statuses(reply) == {"ok-1": SUCCEEDED, "ok-2": SUCCEEDED,
                                "no-1": (pb.BATCH_ITEM_STATUS_FAILED, "DECLINED")}
    assert sorted(c.payee for c in paygrid.captured_everywhere()) == ["payee_ok-1", "payee_ok-2"]


async def test_stop_on_first_failure_charges_nothing_after_it(paygrid) -> None:
    stub = batch_stub(paygrid.channel)
    items = [tx("a-1"), tx("a-2"), tx("a-3", payee="decline_insufficient_funds"),
             tx("a-4"), tx("a-5")]
    # One group of one item at a time: the order of charging is the order sent.
    first = header("stop", max_group_size=1, parallelism=1, failure_policy=STOP)
    reply = await submit(stub, first, chunk(*items))
    stopped = (pb.BATCH_ITEM_STATUS_FAILED, "BATCH_STOPPED")
    assert _statuses(reply) == {"a-1": SUCCEEDED, "a-2": SUCCEEDED,
                                "a-3": (pb.BATCH_ITEM_STATUS_FAILED, "INSUFFICIENT_FUNDS"),
                                "a-4": stopped, "a-5": stopped}
    assert "a-3" in reply.results["a-4"].failure.message
    assert sorted(c.payee for c in paygrid.captured_everywhere()) == ["payee_a-1", "payee_a-2"]
    assert reply.summary.status == pb.BATCH_STATUS_COMPLETED
    got = await stub.GetBatch(pb.GetBatchRequest(batch_id="stop"))
    assert got.batch.failure_policy == STOP

    # Stopped for good: a resubmission (even with new items) charges nothing more.
    again = await submit(stub, first, chunk(*items, tx("a-6")))
    assert again.results["a-6"].failure.reason == "BATCH_STOPPED"
    assert len(paygrid.captured_everywhere()) == 2


async def test_an_item_rejected_on_arrival_stops_the_items_after_it(paygrid) -> None:
    stub = batch_stub(paygrid.channel)
    call, outgoing = open_stream(stub)
    await outgoing.put(header("stop-rejected", max_group_size=2, parallelism=1,
                              failure_policy=STOP))
    await outgoing.put(chunk(tx("b-1"), tx("b-2")))
    first = await call.read()  # that group is charged before anything fails
    assert first.WhichOneof("kind") == "group"
    await outgoing.put(chunk(tx("b-3", amount_minor=0), tx("b-4"), tx("b-5")))
    await outgoing.put(None)
    rest = await collect(call)
    statuses = _statuses(rest)
    assert [(r.reference, r.failure.reason) for r in rest.rejected] == [("b-3", "INVALID_ITEM")]
    assert statuses["b-4"] == statuses["b-5"] == (pb.BATCH_ITEM_STATUS_FAILED, "BATCH_STOPPED")
    assert sorted(c.payee for c in paygrid.captured_everywhere()) == ["payee_b-1", "payee_b-2"]


async def test_all_or_nothing_per_group_reverses_a_group_with_a_failed_item(paygrid) -> None:
    stub = batch_stub(paygrid.channel)
    items = [tx("g1-a"), tx("g1-b"), tx("g1-c", payee="decline_do_not_honor"),
             tx("g2-a"), tx("g2-b"), tx("g2-c")]
    reply = await submit(stub, header("whole", max_group_size=3, parallelism=1,
                                      failure_policy=WHOLE_GROUPS), chunk(*items))
    reversed_ = (pb.BATCH_ITEM_STATUS_FAILED, "OTHER_ITEM_FAILED")
    assert _statuses(reply) == {
        "g1-a": reversed_, "g1-b": reversed_,
        "g1-c": (pb.BATCH_ITEM_STATUS_FAILED, "DECLINED"),
        "g2-a": SUCCEEDED, "g2-b": SUCCEEDED, "g2-c": SUCCEEDED}
    assert "g1-c" in reply.results["g1-a"].failure.message
    assert reply.summary.counts.succeeded == 3 and reply.summary.counts.failed == 3

    ledger = paygrid.ledger("card")
    assert sorted(c.payee for c in ledger.captured()) == ["payee_g2-a", "payee_g2-b",
                                                         "payee_g2-c"]
    # The reversed ones were charged, then voided at the channel: no money held.
    for ref in ("g1-a", "g1-b"):
        charge = next(c for c in ledger.charges.values() if c.payee == f"payee_{ref}")
        assert charge.status is ChargeStatus.VOIDED
        assert reply.results[ref].channel_reference == charge.charge_id


async def test_an_unknown_failure_policy_is_invalid_argument(paygrid) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await submit(batch_stub(paygrid.channel), header("bad-policy", failure_policy=9))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in rich_status(refused.value)["BadRequest"].field_violations] == [
        "header.failure_policy"]


async def test_the_failure_policy_is_part_of_the_batch(paygrid) -> None:
    stub = batch_stub(paygrid.channel)
    await submit(stub, header("fixed-policy", failure_policy=STOP), chunk(tx("c-1")))
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await submit(stub, header("fixed-policy", failure_policy=WHOLE_GROUPS), chunk(tx("c-1")))
    assert reused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_reversal_the_channel_cannot_confirm_is_finished_on_resubmission(
        paygrid) -> None:
    stub = batch_stub(paygrid.channel)
    faults = paygrid.simulator("card").faults
    faults.fail_reversals(1_000)  # every Void and Refund fails UNAVAILABLE for now
    first = header("pending-reversal", max_group_size=2, parallelism=1,
                   failure_policy=WHOLE_GROUPS)
    items = [tx("p-a"), tx("p-b", payee="decline_do_not_honor")]
    reply = await submit(stub, first, chunk(*items))
    assert _statuses(reply)["p-a"] == (pb.BATCH_ITEM_STATUS_UNKNOWN, "REVERSAL_PENDING")
    assert reply.summary.status == pb.BATCH_STATUS_INTERRUPTED  # not finished: money is held
    assert faults.reversals_failed > 0
    assert [c.payee for c in paygrid.ledger("card").captured()] == ["payee_p-a"]

    faults.clear()
    again = await submit(stub, first, chunk(*items))
    assert again.summary.status == pb.BATCH_STATUS_COMPLETED
    assert _statuses(again)["p-a"] == (pb.BATCH_ITEM_STATUS_FAILED, "OTHER_ITEM_FAILED")
    assert paygrid.ledger("card").captured() == []  # voided at last
