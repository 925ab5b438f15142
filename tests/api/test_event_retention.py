"""Retention: events older than the period are deleted, in chunks, never
one after the smallest consumer cursor; a cursor below what was kept is
OUT_OF_RANGE (EVENT_CURSOR_EXPIRED), one at the mark is not. Rounds are
run by the test with the time it chooses (EventRetention.prune(now_us)):
nothing waits for the periodic round, whose interval is set out of reach."""

from __future__ import annotations

import asyncpg
import grpc
import pytest

from paygrid.v1 import event_service_pb2 as ev
from paygrid.v1 import event_service_pb2_grpc as ev_grpc
from paygrid_server.config import EventsConfig
from paygrid_server.domain.events.event_retention import US_PER_DAY
from paygrid_server.storage.postgres.event_consumers import (
    RETENTION_LOCK_CLASS,
)
from tests.conftest import pay_request, rich_status

RETENTION_DAYS = 30
# Every event is older than the period at this time.
FAR_FUTURE_US = 2**62
CHUNK = 2
EVENTS = EventsConfig(retention_days=RETENTION_DAYS, prune_interval_ms=3_600_000,
                      prune_chunk_rows=CHUNK)


@pytest.fixture
async def paygrid(start_paygrid):
    return await start_paygrid(events=EVENTS)


def _stub(paygrid) -> ev_grpc.EventServiceStub:
    return ev_grpc.EventServiceStub(paygrid.channel)


async def _listed(stub, after_cursor: int = 0) -> list[ev.Event]:
    return list((await stub.ListEvents(ev.ListEventsRequest(
        after_cursor=after_cursor, page_size=1000))).events)


async def _pay(paygrid, n: int) -> None:
    for i in range(n):
        await paygrid.stub.Pay(pay_request(f"k-ret-{i}-{paygrid.app.port}"))


def _pruned_through(paygrid) -> int:
    return paygrid.rows("SELECT pruned_through_seq FROM event_retention")[0][0]


def _expired(error: grpc.aio.AioRpcError, pruned: int, field: str) -> None:
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE
    details = rich_status(error)
    assert details["ErrorInfo"].reason == "EVENT_CURSOR_EXPIRED"
    assert details["ErrorInfo"].domain == "paygrid"
    assert details["ErrorInfo"].metadata["pruned_through"] == str(pruned)
    assert [v.field for v in details["BadRequest"].field_violations] == [field]


async def test_old_events_go_in_chunks_and_a_cursor_below_the_mark_expires(paygrid) -> None:
    stub = _stub(paygrid)
    await _pay(paygrid, 3)
    events = await _listed(stub)
    assert len(events) == 9  # 5 chunks of 2 at most: all go, the last chunk short
    assert await paygrid.app.event_retention.prune(FAR_FUTURE_US) == 9
    last = events[-1].seq
    assert _pruned_through(paygrid) == last
    assert paygrid.rows("SELECT count(*) FROM events") == [(0,)]
    # At the mark: nothing after it was deleted, so accepted (and empty).
    assert await _listed(stub, last) == []
    # One below: event `last` is gone, so the cursor is expired.
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _listed(stub, last - 1)
    _expired(error.value, last, "after_cursor")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for _ in stub.WatchEvents(ev.WatchEventsRequest(after_cursor=last - 1)):
            raise AssertionError("a frame before the error")
    _expired(error.value, last, "after_cursor")
    # 0 is the beginning: whatever is kept.
    assert await _listed(stub) == []
    # A consumer's saved cursor below the mark (retention never makes one:
    # written here as a restored backup might leave it) expires its watch.
    paygrid.rows("INSERT INTO event_consumers VALUES ('dev', 'restored', ?, 0)", (last - 1,))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for _ in stub.WatchEvents(ev.WatchEventsRequest(consumer="restored")):
            raise AssertionError("a frame before the error")
    _expired(error.value, last, "consumer")
    paygrid.rows("DELETE FROM event_consumers")
    # Acks below the mark are refused too; at it, saved.
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.AckEvents(ev.AckEventsRequest(consumer="late", up_to_cursor=last - 1))
    _expired(error.value, last, "up_to_cursor")
    assert (await stub.AckEvents(ev.AckEventsRequest(consumer="late", up_to_cursor=last))
            ).cursor == last
    # Numbering goes on above the mark, even with every event gone.
    await paygrid.stub.Pay(pay_request("k-after-prune"))
    after = await _listed(stub, last)
    assert [e.seq for e in after] == [last + 1, last + 2, last + 3]
    stream = stub.WatchEvents(ev.WatchEventsRequest(consumer="late"))
    async for frame in stream:
        if frame.HasField("event"):
            assert frame.event == after[0]
            break
    stream.cancel()


async def test_only_events_older_than_the_period_go(paygrid) -> None:
    stub = _stub(paygrid)
    await _pay(paygrid, 2)
    events = await _listed(stub)
    # Now is such that the 4th event (the second payment's first) is exactly
    # as old as the period: it stays, the three before it go.
    now_us = events[3].time.ToMicroseconds() + RETENTION_DAYS * US_PER_DAY
    assert await paygrid.app.event_retention.prune(now_us) == 3
    assert await _listed(stub, events[2].seq) == events[3:]
    assert _pruned_through(paygrid) == events[2].seq


async def test_a_consumer_cursor_holds_retention_back_until_it_moves_or_goes(paygrid) -> None:
    stub = _stub(paygrid)
    await _pay(paygrid, 2)
    events = await _listed(stub)
    await stub.AckEvents(ev.AckEventsRequest(consumer="slow", up_to_cursor=events[2].seq))
    await stub.AckEvents(ev.AckEventsRequest(consumer="fast", up_to_cursor=events[4].seq))
    retention = paygrid.app.event_retention
    assert await retention.prune(FAR_FUTURE_US) == 3  # nothing after slow's cursor
    assert await _listed(stub, events[2].seq) == events[3:]
    # A watch from slow's cursor misses nothing.
    stream = stub.WatchEvents(ev.WatchEventsRequest(consumer="slow"))
    async for frame in stream:
        assert frame.event == events[3]
        break
    stream.cancel()
    await stub.AckEvents(ev.AckEventsRequest(consumer="slow", up_to_cursor=events[3].seq))
    assert await retention.prune(FAR_FUTURE_US) == 1
    await stub.DeleteEventConsumer(ev.DeleteEventConsumerRequest(consumer="slow"))
    assert await retention.prune(FAR_FUTURE_US) == 1  # now fast's cursor, events[4]
    # The RabbitMQ relay's position (tenant '', no API key's) counts like any other.
    paygrid.rows("INSERT INTO event_consumers VALUES ('', 'relay:rabbitmq', ?, 0)",
                 (events[4].seq,))
    await stub.DeleteEventConsumer(ev.DeleteEventConsumerRequest(consumer="fast"))
    assert await retention.prune(FAR_FUTURE_US) == 0
    paygrid.rows("DELETE FROM event_consumers")
    assert await retention.prune(FAR_FUTURE_US) == 1
    assert paygrid.rows("SELECT count(*) FROM events") == [(0,)]


async def test_retention_days_zero_keeps_everything(start_paygrid) -> None:
    paygrid = await start_paygrid(events=EventsConfig(retention_days=0))
    await _pay(paygrid, 1)
    assert await paygrid.app.event_retention.prune(FAR_FUTURE_US) == 0
    assert paygrid.rows("SELECT count(*) FROM events") == [(3,)]


@pytest.mark.postgresql_only
async def test_one_replica_prunes_at_a_time(paygrid) -> None:
    """Another replica holding the retention lock: this one skips its round
    (nothing deleted), and prunes once the lock is free. Nothing read the
    log before: the pruner numbers the events itself."""
    await _pay(paygrid, 1)
    holder = await asyncpg.connect(str(paygrid.database))
    try:
        assert await holder.fetchval(
            "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))", RETENTION_LOCK_CLASS)
        assert await paygrid.app.event_retention.prune(FAR_FUTURE_US) == 0
        assert paygrid.rows("SELECT count(*) FROM events") == [(3,)]
        assert await holder.fetchval("SELECT pg_advisory_unlock($1, hashtext(current_schema()))",
                             RETENTION_LOCK_CLASS)
        assert await paygrid.app.event_retention.prune(FAR_FUTURE_US) == 3
    finally:
        await holder.close()
