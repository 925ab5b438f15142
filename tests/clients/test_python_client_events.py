"""The Python clients' event methods: against a real paygrid (list, watch
with filters and a consumer, ack, delete), and against a fake EventService
that drops the stream, to show both clients resume after the last cursor
without repeating or skipping an event."""

from __future__ import annotations

import asyncio

import pytest

from paygrid.v1 import event_service_pb2 as ev
from paygrid_client import AsyncPaygridClient, PaygridClient, PaygridError, RetryPolicy
from tests.conftest import pay_request
from tests.support.dropping_event_service import start_dropping_event_service

FAST_RETRIES = RetryPolicy(initial_backoff_s=0.01)


async def _first(frames, n: int) -> list:
    taken = []
    async for frame in frames:
        taken.append(frame)
        if len(taken) == n:
            await frames.aclose()
            return taken
    raise AssertionError(f"the watch ended after {len(taken)} frames")


async def test_the_async_client_lists_watches_acks_and_deletes(paygrid) -> None:
    paid = (await paygrid.stub.Pay(pay_request("k-py-1"))).payment
    await paygrid.stub.Pay(pay_request("k-py-2"))
    async with AsyncPaygridClient(f"127.0.0.1:{paygrid.app.port}") as client:
        page = await client.list_events_page(subject=paid.payment_id)
        assert [e.aggregate_id for e in page.events] == [paid.payment_id] * 3
        assert page.next_cursor == page.events[-1].seq
        assert await client.ack_events("py", page.next_cursor) == page.next_cursor
        frames = await _first(client.watch_events(consumer="py"), 3)
        assert {f.event.aggregate_id for f in frames} != {paid.payment_id}
        assert frames[0].event.seq > page.next_cursor
        latest = await _first(client.watch_events(start=ev.START_POSITION_LATEST,
                                                  keepalives=True), 1)
        assert not latest[0].HasField("event") and latest[0].cursor == frames[-1].cursor
        await client.delete_event_consumer("py")
        with pytest.raises(PaygridError) as error:
            await client.delete_event_consumer("py")
        assert error.value.code.name == "NOT_FOUND"


async def test_the_async_client_resumes_a_dropped_watch_after_the_last_cursor() -> None:
    events, server, port = await start_dropping_event_service()
    try:
        async with AsyncPaygridClient(f"127.0.0.1:{port}", retry_policy=FAST_RETRIES) as client:
            frames = await _first(client.watch_events(
                consumer="erp", start=ev.START_POSITION_LATEST,
                type_prefix="io.paygrid.payment."), 4)
    finally:
        await server.stop(None)
    assert [f.event.seq for f in frames] == [1, 2, 3, 4]
    first, again = events.requests
    assert (first.consumer, first.start) == ("erp", ev.START_POSITION_LATEST)
    # Again after event 2, as a plain cursor (the consumer's saved position
    # may be older), with the same filter.
    assert again == ev.WatchEventsRequest(after_cursor=2, type_prefix="io.paygrid.payment.")


async def test_the_sync_client_resumes_a_dropped_watch_after_the_last_cursor() -> None:
    events, server, port = await start_dropping_event_service()

    def watch() -> list[int]:  # blocking: in a thread, the fake serves on this loop
        with PaygridClient(f"127.0.0.1:{port}", retry_policy=FAST_RETRIES) as client:
            frames = client.watch_events(consumer="erp", start=ev.START_POSITION_LATEST,
                                         type_prefix="io.paygrid.payment.")
            return [frame.event.seq for _, frame in zip(range(4), frames)]

    try:
        assert await asyncio.to_thread(watch) == [1, 2, 3, 4]
    finally:
        await server.stop(None)
    assert events.requests[1] == ev.WatchEventsRequest(after_cursor=2,
                                                       type_prefix="io.paygrid.payment.")
