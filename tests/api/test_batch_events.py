"""A batch's group and item events through EventService, on both engines:
one batch.group.completed per group with every item's result (successes
are told only there), one batch.item.failed / batch.item.unknown per item
that needs a look, all in the batch's one version sequence with its status
events; ListBatchItems' versions name the event that last reported each
item. A resubmission that settles an item reports it (and its group) again;
one that changes nothing reports nothing."""

from __future__ import annotations

from paygrid.v1 import batch_service_pb2 as pb
from paygrid.v1 import event_service_pb2 as ev
from paygrid.v1 import event_service_pb2_grpc as ev_grpc
from tests.support.batch_client import batch_stub, chunk, header, submit, tx

T = "io.paygrid.{}.v1".format
WHOLE_GROUPS = pb.FAILURE_POLICY_ALL_OR_NOTHING_PER_GROUP


async def _batch_events(paygrid, after: int = 0) -> list[ev.Event]:
    stub = ev_grpc.EventServiceStub(paygrid.channel)
    events, cursor = [], 0
    while page := (await stub.ListEvents(ev.ListEventsRequest(
            after_cursor=cursor, type_prefix="io.paygrid.batch."))).events:
        events.extend(page)
        cursor = page[-1].seq
    return [e for e in events if e.aggregate_version > after]


async def _listed(stub) -> dict[str, pb.BatchItem]:
    return {item.transaction.reference: item async for page in stub.ListBatchItems(
        pb.ListBatchItemsRequest(batch_id="mixed")) for item in page.items}


def _payload(event: ev.Event, message):
    assert event.data.Unpack(message), event.data.type_url
    return message


def _told(event: ev.Event) -> tuple[str, int, str]:
    """(type, version, what it is about: the batch, a group or an item)."""
    if event.type == T("batch.group.completed"):
        about = f"group {_payload(event, pb.GroupResult()).group_no}"
    elif event.type.startswith(T("batch.item.")[:-3]):
        about = _payload(event, pb.BatchItem()).transaction.reference
    else:
        about = _payload(event, pb.Batch()).batch_id
    return event.type, event.aggregate_version, about


async def test_succeeding_failing_and_unknown_items_are_told_once_each_in_one_sequence(
        paygrid) -> None:
    stub = batch_stub(paygrid.channel)
    faults = paygrid.simulator("card").faults
    faults.fail_reversals(1_000)  # w-1's reversal cannot be confirmed: it stays UNKNOWN
    # One group at a time, in the order sent: [ok-1, ok-2, ok-3], then
    # [w-1, w-2]; w-2 is declined, so w-1 (charged) must be reversed.
    first = header("mixed", max_group_size=3, parallelism=1, failure_policy=WHOLE_GROUPS)
    items = [tx("ok-1"), tx("ok-2"), tx("ok-3"), tx("w-1"), tx("w-2", payee="decline_do_not_honor")]
    reply = await submit(stub, first, chunk(*items))
    assert reply.summary.status == pb.BATCH_STATUS_INTERRUPTED  # w-1 is not settled yet

    events = await _batch_events(paygrid)
    assert [_told(e) for e in events] == [
        (T("batch.created"), 1, "mixed"),
        (T("batch.group.completed"), 2, "group 1"),  # no event per success
        (T("batch.item.unknown"), 3, "w-1"), (T("batch.item.failed"), 4, "w-2"),
        (T("batch.group.completed"), 5, "group 2"),
        (T("batch.interrupted"), 6, "mixed"),
    ]
    assert {(e.aggregate_type, e.aggregate_id) for e in events} == {("batch", "mixed")}
    # Each group's payload is what SubmitBatch streamed and what ListBatchItems holds.
    listed = await _listed(stub)
    for event, streamed in zip((events[1], events[4]), reply.groups):
        group = _payload(event, pb.GroupResult())
        assert group == streamed
        assert list(group.items) == [listed[r.reference].result for r in group.items]
    assert [r.reference for r in _payload(events[1], pb.GroupResult()).items] == [
        "ok-1", "ok-2", "ok-3"]
    # An item event's payload is the item as listed, with that event's version.
    assert _payload(events[2], pb.BatchItem()) == listed["w-1"]
    assert _payload(events[3], pb.BatchItem()) == listed["w-2"]
    assert listed["w-1"].result.status == pb.BATCH_ITEM_STATUS_UNKNOWN
    assert listed["w-2"].result.status == pb.BATCH_ITEM_STATUS_FAILED
    assert {ref: item.version for ref, item in listed.items()} == {
        "ok-1": 2, "ok-2": 2, "ok-3": 2, "w-1": 3, "w-2": 4}
    assert (await stub.GetBatch(pb.GetBatchRequest(batch_id="mixed"))).batch.version == 6

    # Resubmitted: w-1's reversal is finished now. That change is told (w-1
    # failed, its group again, as stored); nothing else is.
    faults.clear()
    again = await submit(stub, first, chunk(*items))
    assert again.summary.status == pb.BATCH_STATUS_COMPLETED
    events = await _batch_events(paygrid, after=6)
    assert [_told(e) for e in events] == [
        (T("batch.resumed"), 7, "mixed"), (T("batch.item.failed"), 8, "w-1"),
        (T("batch.group.completed"), 9, "group 2"), (T("batch.completed"), 10, "mixed")]
    listed = await _listed(stub)
    assert _payload(events[1], pb.BatchItem()) == listed["w-1"]
    assert list(_payload(events[2], pb.GroupResult()).items) == [
        listed["w-1"].result, listed["w-2"].result]
    assert listed["w-1"].result.status == pb.BATCH_ITEM_STATUS_FAILED
    assert {ref: item.version for ref, item in listed.items()} == {
        "ok-1": 2, "ok-2": 2, "ok-3": 2, "w-1": 8, "w-2": 9}

    # Once more: nothing to settle or charge, so no group or item event.
    await submit(stub, first, chunk(*items))
    assert [e.type for e in await _batch_events(paygrid, after=10)] == [
        T("batch.resumed"), T("batch.completed")]
    assert (await _listed(stub)) == listed


async def test_items_a_stopped_batch_never_charged_are_told_only_in_their_groups(
        paygrid) -> None:
    # STOP_ON_FIRST_FAILURE: after a-2 is declined, a-3 and a-4 are not
    # charged (FAILED, BATCH_STOPPED). They need no look each (a million-item
    # payroll stopped early must not write a million events): their group
    # events carry them. a-2, declined by the channel, is told on its own.
    stub = batch_stub(paygrid.channel)
    items = [tx("a-1"), tx("a-2", payee="decline_insufficient_funds"), tx("a-3"), tx("a-4")]
    reply = await submit(stub, header("stop", max_group_size=2, parallelism=1,
                                      failure_policy=pb.FAILURE_POLICY_STOP_ON_FIRST_FAILURE),
                         chunk(*items))
    assert {ref: r.failure.reason for ref, r in reply.results.items()} == {
        "a-1": "", "a-2": "INSUFFICIENT_FUNDS", "a-3": "BATCH_STOPPED", "a-4": "BATCH_STOPPED"}
    events = await _batch_events(paygrid)
    item_events = [e for e in events if e.type.startswith("io.paygrid.batch.item.")]
    assert [_told(e)[::2] for e in item_events] == [(T("batch.item.failed"), "a-2")]
    told_in_groups = {r.reference: r.failure.reason for e in events
                      if e.type == T("batch.group.completed")
                      for r in _payload(e, pb.GroupResult()).items}
    assert told_in_groups == {"a-1": "", "a-2": "INSUFFICIENT_FUNDS",
                              "a-3": "BATCH_STOPPED", "a-4": "BATCH_STOPPED"}
    assert [e.aggregate_version for e in events] == list(range(1, len(events) + 1))
