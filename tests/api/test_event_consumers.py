"""Named consumers (AckEvents, DeleteEventConsumer), where a watch starts
(after a cursor, EARLIEST, LATEST, a consumer's saved cursor), the subject
filter, and watchers' own limit, through a real server on both engines."""

from __future__ import annotations

import grpc
import pytest

from paygrid.v1 import event_service_pb2 as ev
from paygrid.v1 import event_service_pb2_grpc as ev_grpc
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from paygrid_server.config import EventsConfig
from tests.conftest import money, pay_request, rich_status
from tests.support.api_key_metadata import ACME_KEY, GLOBEX_KEY, keyed_channel, two_tenants
from tests.support.batch_client import batch_stub, chunk, header, submit, tx
from tests.support.server_process import wait_for


def _stub(paygrid) -> ev_grpc.EventServiceStub:
    return ev_grpc.EventServiceStub(paygrid.channel)


async def _events_of(stream, n: int) -> list[ev.Event]:
    events = []
    async for frame in stream:
        if frame.HasField("event"):
            events.append(frame.event)
            if len(events) == n:
                return events
    raise AssertionError(f"the stream ended after {len(events)} events")


async def _listed(stub, **request) -> list[ev.Event]:
    return list((await stub.ListEvents(ev.ListEventsRequest(page_size=1000, **request))).events)


async def test_acks_are_cumulative_and_a_consumer_resumes_after_its_saved_cursor(
        paygrid) -> None:
    stub = _stub(paygrid)
    for n in range(2):
        await paygrid.stub.Pay(pay_request(f"k-c{n}"))
    events = await _listed(stub)
    assert len(events) == 6
    saved = await stub.AckEvents(ev.AckEventsRequest(consumer="billing",
                                                     up_to_cursor=events[3].seq))
    assert saved.cursor == events[3].seq
    # Lower, then the same again: the higher position stays.
    assert (await stub.AckEvents(ev.AckEventsRequest(
        consumer="billing", up_to_cursor=events[1].seq))).cursor == events[3].seq
    assert (await stub.AckEvents(ev.AckEventsRequest(
        consumer="billing", up_to_cursor=events[3].seq))).cursor == events[3].seq
    assert paygrid.rows("SELECT tenant_id, cursor FROM event_consumers WHERE name = 'billing'") \
        == [("dev", events[3].seq)]
    stream = stub.WatchEvents(ev.WatchEventsRequest(consumer="billing"))
    assert await _events_of(stream, 2) == events[4:]
    stream.cancel()
    # Never acked (or forgotten): from the earliest event kept.
    stream = stub.WatchEvents(ev.WatchEventsRequest(consumer="newcomer"))
    assert await _events_of(stream, 6) == events
    stream.cancel()
    await stub.DeleteEventConsumer(ev.DeleteEventConsumerRequest(consumer="billing"))
    assert paygrid.rows("SELECT count(*) FROM event_consumers") == [(0,)]
    stream = stub.WatchEvents(ev.WatchEventsRequest(consumer="billing"))
    assert await _events_of(stream, 6) == events
    stream.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.DeleteEventConsumer(ev.DeleteEventConsumerRequest(consumer="billing"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_ack_past_the_logs_end_is_out_of_range_and_at_the_end_is_saved(
        paygrid) -> None:
    stub = _stub(paygrid)
    await paygrid.stub.Pay(pay_request("k-end"))
    last = (await _listed(stub))[-1].seq
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.AckEvents(ev.AckEventsRequest(consumer="c", up_to_cursor=last + 1))
    assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE
    details = rich_status(error.value)
    assert details["ErrorInfo"].reason == "EVENT_CURSOR_AHEAD"
    assert details["ErrorInfo"].metadata["high_water_mark"] == str(last)
    assert [v.field for v in details["BadRequest"].field_violations] == ["up_to_cursor"]
    assert paygrid.rows("SELECT count(*) FROM event_consumers") == [(0,)]
    assert (await stub.AckEvents(ev.AckEventsRequest(consumer="c", up_to_cursor=last))).cursor \
        == last
    # 0 registers a consumer at the beginning.
    assert (await stub.AckEvents(ev.AckEventsRequest(consumer="d", up_to_cursor=0))).cursor == 0


@pytest.mark.parametrize("name", ["", "Billing", "a b", "relay:rabbitmq", "x" * 65, "é"])
async def test_a_bad_consumer_name_is_invalid_argument(paygrid, name) -> None:
    stub = _stub(paygrid)
    for call in (stub.AckEvents(ev.AckEventsRequest(consumer=name)),
                 stub.DeleteEventConsumer(ev.DeleteEventConsumerRequest(consumer=name))):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        violations = rich_status(error.value)["BadRequest"].field_violations
        assert [v.field for v in violations] == ["consumer"]
    if name:  # an empty consumer on a watch means none
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await _events_of(stub.WatchEvents(ev.WatchEventsRequest(consumer=name)), 1)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("name", ["x" * 64, "a", "erp.sync_2-b"])
async def test_a_consumer_name_at_the_limits_is_accepted(paygrid, name) -> None:
    assert (await _stub(paygrid).AckEvents(ev.AckEventsRequest(consumer=name))).cursor == 0


@pytest.mark.parametrize("request_", [
    ev.WatchEventsRequest(after_cursor=1, start=ev.START_POSITION_LATEST),
    ev.WatchEventsRequest(after_cursor=1, start=ev.START_POSITION_EARLIEST),
    ev.WatchEventsRequest(after_cursor=1, consumer="c"),
    ev.WatchEventsRequest(start=99),
    ev.WatchEventsRequest(subject="x" * 65),
])
async def test_conflicting_start_positions_are_invalid_argument(paygrid, request_) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _events_of(_stub(paygrid).WatchEvents(request_), 1)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_latest_follows_only_events_committed_after_the_call(paygrid) -> None:
    stub = _stub(paygrid)
    await paygrid.stub.Pay(pay_request("k-before"))
    before = await _listed(stub)
    stream = stub.WatchEvents(ev.WatchEventsRequest(start=ev.START_POSITION_LATEST))
    # The first frame says where it starts: after everything committed so far.
    first = await anext(aiter(stream))
    assert not first.HasField("event") and first.cursor == before[-1].seq
    after = (await paygrid.stub.Pay(pay_request("k-after"))).payment
    assert [e.aggregate_id for e in await _events_of(stream, 3)] == [after.payment_id] * 3
    stream.cancel()
    # An unknown consumer may start at LATEST too.
    stream = stub.WatchEvents(ev.WatchEventsRequest(consumer="fresh",
                                                    start=ev.START_POSITION_LATEST))
    first = await anext(aiter(stream))
    assert not first.HasField("event") and first.cursor == (await _listed(stub))[-1].seq
    stream.cancel()
    # EARLIEST: everything kept.
    stream = stub.WatchEvents(ev.WatchEventsRequest(start=ev.START_POSITION_EARLIEST))
    assert await _events_of(stream, 6) == await _listed(stub)
    stream.cancel()


async def test_the_subject_filter_is_an_exact_aggregate_id(paygrid) -> None:
    stub = _stub(paygrid)
    first = (await paygrid.stub.Pay(pay_request("k-s1"))).payment
    second = (await paygrid.stub.Pay(pay_request("k-s2"))).payment
    await submit(batch_stub(paygrid.channel), header("b-subject"), chunk(tx("r1")))
    mine = await _listed(stub, subject=second.payment_id)
    assert [(e.aggregate_id, e.aggregate_version) for e in mine] == [
        (second.payment_id, v) for v in (1, 2, 3)]
    assert [e.aggregate_id for e in await _listed(stub, subject=first.payment_id)] == [
        first.payment_id] * 3
    assert [e.type for e in await _listed(stub, subject="b-subject")] == [
        "io.paygrid.batch.created.v1", "io.paygrid.batch.group.completed.v1",
        "io.paygrid.batch.completed.v1"]
    assert await _listed(stub, subject=second.payment_id[:-1]) == []
    assert [e.type for e in await _listed(stub, subject=second.payment_id,
                                          type_prefix="io.paygrid.payment.succeeded")] == [
        "io.paygrid.payment.succeeded.v1"]
    stream = stub.WatchEvents(ev.WatchEventsRequest(subject=second.payment_id))
    assert await _events_of(stream, 3) == mine
    third = (await paygrid.stub.Pay(pay_request("k-s3"))).payment
    refund_target = second.payment_id
    await paygrid.stub.RefundPayment(pb.RefundPaymentRequest(
        payment_id=refund_target, idempotency_key="r-s",
        legs=[pb.RefundLeg(leg_index=0, amount=money("USD", 100))]))
    # third's events are skipped; the refund of second's arrives.
    live = await _events_of(stream, 2)
    assert {e.aggregate_id for e in live} == {refund_target} != {third.payment_id}
    assert [e.aggregate_version for e in live] == [4, 5]
    stream.cancel()


async def test_consumers_are_per_tenant(start_paygrid) -> None:
    paygrid = await start_paygrid(auth=two_tenants())
    target = f"127.0.0.1:{paygrid.app.port}"
    async with keyed_channel(target, ACME_KEY) as acme, \
            keyed_channel(target, GLOBEX_KEY) as globex:
        await pb_grpc.PaymentServiceStub(acme).Pay(pay_request("k-acme"))
        await pb_grpc.PaymentServiceStub(globex).Pay(pay_request("k-globex"))
        acme_events = await _listed(ev_grpc.EventServiceStub(acme))
        await ev_grpc.EventServiceStub(acme).AckEvents(ev.AckEventsRequest(
            consumer="sync", up_to_cursor=acme_events[-1].seq))
        globex_stub = ev_grpc.EventServiceStub(globex)
        # Globex's "sync" is another consumer: unknown, so from the beginning.
        stream = globex_stub.WatchEvents(ev.WatchEventsRequest(consumer="sync"))
        assert await _events_of(stream, 3) == await _listed(globex_stub)
        stream.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await globex_stub.DeleteEventConsumer(ev.DeleteEventConsumerRequest(consumer="sync"))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert paygrid.rows("SELECT tenant_id, name FROM event_consumers") == [("acme", "sync")]


async def test_watchers_have_their_own_limit_and_do_not_take_pays_slots(start_paygrid) -> None:
    paygrid = await start_paygrid(max_concurrent_calls=1,
                                  events=EventsConfig(max_watchers=2))
    stub = _stub(paygrid)
    streams = [stub.WatchEvents(ev.WatchEventsRequest(start=ev.START_POSITION_LATEST))
               for _ in range(2)]
    for stream in streams:  # each is open: its first frame came
        await anext(aiter(stream))
    assert paygrid.app.load_shedding.event_watchers.in_progress == 2
    # One call slot, two watchers open: Pay still has it.
    paid = (await paygrid.stub.Pay(pay_request("k-slot"), timeout=10)).payment
    assert paid.payment_id
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _events_of(stub.WatchEvents(ev.WatchEventsRequest()), 1)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rich_status(error.value)["ErrorInfo"].metadata["limit"] == "event_watchers"
    streams.pop().cancel()
    await wait_for(lambda: paygrid.app.load_shedding.event_watchers.in_progress == 1,
                   "the cancelled watch to end")
    stream = stub.WatchEvents(ev.WatchEventsRequest())
    assert len(await _events_of(stream, 3)) == 3
    stream.cancel()
    for stream in streams:
        stream.cancel()
