"""The event log through EventService: every state change of a payment and
its refunds, in order, versions 1..N without gaps, the last payload equal to
what GetPayment answers; paged by cursor, filtered by type prefix, scoped to
the caller's tenant."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from paygrid.v1 import event_service_pb2 as ev
from paygrid.v1 import event_service_pb2_grpc as ev_grpc
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from paygrid_server.domain.model import limits
from tests.conftest import leg, money, pay_request, rich_status
from tests.support.api_key_metadata import ACME_KEY, GLOBEX_KEY, keyed_channel, two_tenants
from tests.support.server_process import wait_for

T = "io.paygrid.{}.v1".format


def _events_stub(paygrid) -> ev_grpc.EventServiceStub:
    return ev_grpc.EventServiceStub(paygrid.channel)


async def _all_events(stub, type_prefix: str = "", page_size: int = 0) -> list[ev.Event]:
    events, cursor = [], 0
    while True:
        page = await stub.ListEvents(ev.ListEventsRequest(
            after_cursor=cursor, page_size=page_size, type_prefix=type_prefix))
        if not page.events:
            assert page.next_cursor == cursor  # an empty page keeps the cursor
            return events
        events.extend(page.events)
        cursor = page.next_cursor
        assert cursor == page.events[-1].seq


def _payment_of(event: ev.Event) -> pb.Payment:
    payment = pb.Payment()
    assert event.data.Unpack(payment), event.data.type_url
    return payment


async def test_a_pay_writes_created_then_each_leg_then_the_outcome(paygrid) -> None:
    request = pay_request("k-ev", leg("hotel_0001"), leg("flight_0001", "EUR", 5_000))
    paid = (await paygrid.stub.Pay(request, timeout=5)).payment
    assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED
    events = await _all_events(_events_stub(paygrid))
    assert [e.type for e in events] == [T("payment.created"), T("payment.leg.succeeded"),
                                        T("payment.leg.succeeded"), T("payment.succeeded")]
    assert [e.aggregate_version for e in events] == [1, 2, 3, 4]
    assert {(e.aggregate_type, e.aggregate_id) for e in events} == {("payment", paid.payment_id)}
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert len({e.event_id for e in events}) == 4
    assert {uuid.UUID(e.event_id).version for e in events} == {7}  # time-ordered ids
    stored = (await paygrid.stub.GetPayment(pb.GetPaymentRequest(
        payment_id=paid.payment_id))).payment
    assert stored.version == 4 and paid.version == 4
    assert _payment_of(events[-1]) == stored  # the last payload is the stored state
    created = _payment_of(events[0])
    assert created.status == pb.PAYMENT_STATUS_PROCESSING and created.version == 1
    assert [l.status for l in created.legs] == [pb.LEG_STATUS_PENDING] * 2
    # GetEvent answers the same event.
    got = await _events_stub(paygrid).GetEvent(ev.GetEventRequest(event_id=events[2].event_id))
    assert got.event == events[2]


async def test_a_declined_all_or_nothing_payment_reports_failed_and_voided_legs(paygrid) -> None:
    request = pay_request("k-aon", leg("hotel_0001"), leg("decline_insufficient_funds"))
    paid = (await paygrid.stub.Pay(request, timeout=5)).payment
    assert paid.status == pb.PAYMENT_STATUS_FAILED
    events = await _all_events(_events_stub(paygrid))
    types = [e.type for e in events]
    assert types[0] == T("payment.created") and types[-1] == T("payment.failed")
    assert sorted(types[1:-1]) == [T("payment.leg.failed"), T("payment.leg.voided")]
    assert [e.aggregate_version for e in events] == list(range(1, len(events) + 1))
    assert _payment_of(events[-1]).version == paid.version == len(events)
    # The outcome's snapshot (built from the payment saved, not read back)
    # is the stored state, failures and decline codes included.
    stored = (await paygrid.stub.GetPayment(pb.GetPaymentRequest(
        payment_id=paid.payment_id))).payment
    assert _payment_of(events[-1]) == stored
    assert stored.failure.decline_code and stored.legs[1].failure.decline_code


async def test_refunds_continue_their_payments_versions(paygrid) -> None:
    paid = (await paygrid.stub.Pay(pay_request("k-r", leg(amount_minor=1_000)))).payment
    refund = await paygrid.stub.RefundPayment(pb.RefundPaymentRequest(
        payment_id=paid.payment_id, idempotency_key="r1",
        legs=[pb.RefundLeg(leg_index=0, amount=money("USD", 400))]))
    assert refund.refund.status == pb.REFUND_STATUS_SUCCEEDED
    events = await _all_events(_events_stub(paygrid))
    assert [(e.type, e.aggregate_version) for e in events] == [
        (T("payment.created"), 1), (T("payment.leg.succeeded"), 2), (T("payment.succeeded"), 3),
        (T("payment.refund.created"), 4), (T("payment.refund.succeeded"), 5)]
    assert all(e.aggregate_id == paid.payment_id for e in events)
    last = pb.Refund()
    assert events[-1].data.Unpack(last)
    assert last == refund.refund
    pending = pb.Refund()
    assert events[-2].data.Unpack(pending) and pending.status == pb.REFUND_STATUS_PENDING
    stored = (await paygrid.stub.GetPayment(pb.GetPaymentRequest(
        payment_id=paid.payment_id))).payment
    assert stored.version == 5 and stored.legs[0].refunded_amount_minor == 400
    # A retried refund (same key) changes nothing, so writes no event.
    await paygrid.stub.RefundPayment(pb.RefundPaymentRequest(
        payment_id=paid.payment_id, idempotency_key="r1",
        legs=[pb.RefundLeg(leg_index=0, amount=money("USD", 400))]))
    assert len(await _all_events(_events_stub(paygrid))) == 5


async def test_a_retried_pay_writes_no_second_event(paygrid) -> None:
    await paygrid.stub.Pay(pay_request("k-once"))
    await paygrid.stub.Pay(pay_request("k-once"))
    events = await _all_events(_events_stub(paygrid))
    assert [e.aggregate_version for e in events] == [1, 2, 3]


async def test_pages_and_the_type_prefix_filter(paygrid) -> None:
    for n in range(3):
        await paygrid.stub.Pay(pay_request(f"k-page-{n}"))
    stub = _events_stub(paygrid)
    everything = await _all_events(stub)
    assert len(everything) == 9
    assert await _all_events(stub, page_size=2) == everything
    assert await _all_events(stub, page_size=limits.EVENTS_PAGE_SIZE_MAX) == everything
    finals = await _all_events(stub, type_prefix=T("payment.succeeded"))
    assert [e.type for e in finals] == [T("payment.succeeded")] * 3
    legs = await _all_events(stub, type_prefix="io.paygrid.payment.leg.")
    assert [e.type for e in legs] == [T("payment.leg.succeeded")] * 3
    # A prefix is exact: no case folding, no LIKE wildcards.
    assert await _all_events(stub, type_prefix="IO.PAYGRID.") == []
    assert await _all_events(stub, type_prefix="io.paygrid.payment_") == []
    assert await _all_events(stub, type_prefix="io.paygrid.payment.%") == []


@pytest.mark.parametrize(("request_", "field"), [
    (ev.ListEventsRequest(page_size=limits.EVENTS_PAGE_SIZE_MAX + 1), "page_size"),
    (ev.ListEventsRequest(page_size=-1), "page_size"),
    (ev.ListEventsRequest(after_cursor=-1), "after_cursor"),
    (ev.ListEventsRequest(type_prefix="x" * (limits.EVENT_TYPE_PREFIX_MAX_CHARS + 1)),
     "type_prefix"),
])
async def test_bad_list_requests_are_invalid_argument(paygrid, request_, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _events_stub(paygrid).ListEvents(request_)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = rich_status(error.value)["BadRequest"].field_violations
    assert [v.field for v in violations] == [field]


async def test_a_type_prefix_at_its_limit_is_accepted(paygrid) -> None:
    page = await _events_stub(paygrid).ListEvents(ev.ListEventsRequest(
        type_prefix="x" * limits.EVENT_TYPE_PREFIX_MAX_CHARS))
    assert list(page.events) == []


async def test_unknown_event_is_not_found(paygrid) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _events_stub(paygrid).GetEvent(ev.GetEventRequest(event_id="no-such-event"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _events_stub(paygrid).GetEvent(ev.GetEventRequest())
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_tenant_sees_only_its_own_events(start_paygrid) -> None:
    paygrid = await start_paygrid(auth=two_tenants())
    target = f"127.0.0.1:{paygrid.app.port}"
    async with keyed_channel(target, ACME_KEY) as acme, \
            keyed_channel(target, GLOBEX_KEY) as globex:
        paid = (await pb_grpc.PaymentServiceStub(acme).Pay(pay_request("k-t"))).payment
        acme_events = await _all_events(ev_grpc.EventServiceStub(acme))
        assert [e.aggregate_id for e in acme_events] == [paid.payment_id] * 3
        globex_stub = ev_grpc.EventServiceStub(globex)
        assert await _all_events(globex_stub) == []
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await globex_stub.GetEvent(ev.GetEventRequest(event_id=acme_events[0].event_id))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def _frames(stream, n: int, keepalives: bool = False) -> list[ev.WatchEventsResponse]:
    """The next n frames with an event; keep-alive frames are skipped unless
    `keepalives` (then they count, and fail a test that expects events)."""
    frames = []
    async for frame in stream:
        if not keepalives and not frame.HasField("event"):
            continue
        frames.append(frame)
        if len(frames) == n:
            return frames
    raise AssertionError(f"the stream ended after {len(frames)} frames")


class _ParkedWatcher:
    """A watcher of `app`'s PostgreSQL event log asleep in wait_for_change,
    having read everything, with nothing woken it since: the moment a commit
    made elsewhere can reach it only through a NOTIFY. (A commit before that
    moment, say one before the watcher's first read, is found by that read
    without any wake-up: a test timed that way passes without NOTIFY.)
    `timeouts` counts its sleeps that ended at the keep-alive timeout
    instead: the watcher then reads anyway, and gets the events late."""

    def __init__(self, monkeypatch, app) -> None:
        from paygrid_server.storage.postgres.event_log import PostgresEventLog

        self._asleep = asyncio.Event()
        self._log = None
        self._seen = -1
        self.timeouts = 0
        original = PostgresEventLog.wait_for_change

        async def wait_for_change(log, seen: int, timeout_s: float) -> bool:
            if log._database is not app.database or log.changes() != seen:
                return await original(log, seen, timeout_s)  # the latter: at once
            self._log, self._seen = log, seen
            self._asleep.set()
            try:
                woken = await original(log, seen, timeout_s)
            finally:
                self._asleep.clear()
            self.timeouts += not woken
            return woken

        monkeypatch.setattr(PostgresEventLog, "wait_for_change", wait_for_change)

    async def wait(self) -> None:
        async def asleep() -> None:
            while True:
                await self._asleep.wait()
                if self._log.changes() == self._seen:
                    return
                # Woken (a reopened LISTEN wakes it, say), not yet run: it
                # is ready to run, reads, and sleeps again.
                await asyncio.sleep(0)

        await asyncio.wait_for(asleep(), 30)


async def test_watch_replays_from_the_cursor_then_follows_new_commits(paygrid) -> None:
    stub = _events_stub(paygrid)
    first = (await paygrid.stub.Pay(pay_request("k-w1"))).payment
    stream = stub.WatchEvents(ev.WatchEventsRequest())
    replayed = await _frames(stream, 3)
    assert [f.event.aggregate_id for f in replayed] == [first.payment_id] * 3
    assert [f.cursor for f in replayed] == [f.event.seq for f in replayed]
    # Follows: a Pay committed after the replay arrives on the open stream.
    second = (await paygrid.stub.Pay(pay_request("k-w2"))).payment
    live = await _frames(stream, 3)
    assert [(f.event.aggregate_id, f.event.aggregate_version) for f in live] == [
        (second.payment_id, 1), (second.payment_id, 2), (second.payment_id, 3)]
    assert live[0].event.seq > replayed[-1].event.seq
    stream.cancel()
    # Resumed from a cursor: exactly what came after it, nothing before.
    resumed = stub.WatchEvents(ev.WatchEventsRequest(after_cursor=replayed[-1].cursor))
    assert [f.event for f in await _frames(resumed, 3)] == [f.event for f in live]
    resumed.cancel()
    all_events = await _all_events(stub)
    assert [f.event for f in replayed + live] == all_events


async def test_watch_filters_by_type_prefix(paygrid) -> None:
    stream = _events_stub(paygrid).WatchEvents(ev.WatchEventsRequest(
        type_prefix=T("payment.succeeded")))
    paid = [(await paygrid.stub.Pay(pay_request(f"k-wf{n}"))).payment for n in range(2)]
    frames = await _frames(stream, 2)
    assert [(f.event.type, f.event.aggregate_id) for f in frames] == [
        (T("payment.succeeded"), p.payment_id) for p in paid]
    stream.cancel()


async def test_a_bad_watch_request_fails_before_any_frame(paygrid) -> None:
    stream = _events_stub(paygrid).WatchEvents(ev.WatchEventsRequest(after_cursor=-1))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _frames(stream, 1)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.postgresql_only
async def test_a_watcher_on_one_replica_follows_payments_made_on_another(
        start_paygrid, postgres_databases, monkeypatch) -> None:
    """LISTEN/NOTIFY wakes the other replica: no polling between them."""
    dsn = await postgres_databases.create()
    a = await start_paygrid(postgres_dsn=dsn)
    b = await start_paygrid(postgres_dsn=dsn)
    parked = _ParkedWatcher(monkeypatch, b.app)
    stream = _events_stub(b).WatchEvents(ev.WatchEventsRequest())
    # Once its (empty) replay is done the watcher sleeps: a Pay through A,
    # then a Pay through B, each made while it sleeps, both arrive, in
    # commit order.
    await parked.wait()
    on_a = (await a.stub.Pay(pay_request("k-on-a"))).payment
    frames = await _frames(stream, 3, keepalives=True)
    assert [f.event.aggregate_id for f in frames] == [on_a.payment_id] * 3
    assert parked.timeouts == 0  # a NOTIFY woke B, not its keep-alive timeout
    await parked.wait()
    on_b = (await b.stub.Pay(pay_request("k-on-b"))).payment
    frames = await _frames(stream, 3, keepalives=True)
    assert [f.event.aggregate_id for f in frames] == [on_b.payment_id] * 3
    assert parked.timeouts == 0
    stream.cancel()


@pytest.mark.postgresql_only
async def test_each_commit_of_a_pay_notifies_the_watchers(start_paygrid,
                                                          postgres_databases) -> None:
    """A Pay's two commits (the payment stored, then its outcome) each send
    a NOTIFY on the events channel: what wakes the watchers of every replica
    at once. Heard on a LISTEN connection of the test's own (the watch tests
    above can be served by a read that comes after the commit anyway)."""
    import asyncpg

    from paygrid_server.storage.postgres.payment_events import EVENTS_CHANNEL

    dsn = await postgres_databases.create()
    paygrid = await start_paygrid(postgres_dsn=dsn)
    heard: list[str] = []
    listener = await asyncpg.connect(dsn)
    try:
        await listener.add_listener(EVENTS_CHANNEL, lambda *args: heard.append(args[2]))
        await paygrid.stub.Pay(pay_request("k-notified"))
        await wait_for(lambda: len(heard) >= 2, "a NOTIFY from each of the Pay's commits")
    finally:
        await listener.close()


async def test_a_quiet_watch_sends_a_keepalive_frame_past_what_it_does_not_see(
        tmp_path) -> None:
    """Nothing of the watcher's comes: the keep-alive frame's cursor moves
    past the other tenant's events (a consumer resuming from it skips them)."""
    from paygrid_server.domain.events.event_queries import EventQueries
    from paygrid_server.domain.model.money import Money
    from paygrid_server.domain.model.payment import Leg, LegRequest, Payment, PaymentMode
    from paygrid_server.storage.sqlite.database import SqliteDatabase
    from paygrid_server.storage.sqlite.event_log import SqliteEventLog
    from paygrid_server.storage.sqlite.payment_store import SqlitePaymentStore
    from paygrid_server.transport.event_messages import ProtobufSnapshots

    database = await SqliteDatabase.open(tmp_path / "quiet.sqlite3")
    try:
        store = SqlitePaymentStore(database, ProtobufSnapshots())
        for n in range(2):
            leg_ = Leg(0, LegRequest("m", Money("EUR", 100), "", ""))
            await store.insert_payment(Payment(f"pay_{n}", "other-tenant", f"k{n}", "fp", "p",
                                               PaymentMode.ALL_OR_NOTHING, [leg_], {}, 1))
        log = SqliteEventLog(database)
        assert await log.last_seq() == 2
        frames = EventQueries(log).watch("dev", 0, "", keepalive_s=0.05)
        keepalive = await anext(frames)  # nothing of dev's is written: the wait times out
        assert keepalive.event is None and keepalive.cursor == 2
        await frames.aclose()
        # Never backwards: a cursor past the log's end stays where it is.
        frames = EventQueries(log).watch("dev", 7, "", keepalive_s=0.05)
        assert (await anext(frames)).cursor == 7
        await frames.aclose()
    finally:
        await database.close()


async def test_under_concurrent_pays_and_refunds_a_watcher_gets_every_event_in_order(
        paygrid) -> None:
    """20 payments and their refunds at once, a watcher open from the start:
    it receives exactly the log, seqs without gaps (one tenant), each
    payment's versions 1..N in increasing order, its last payload the
    stored payment's final version."""
    stream = _events_stub(paygrid).WatchEvents(ev.WatchEventsRequest())

    async def pay_and_refund(n: int) -> pb.Payment:
        paid = (await paygrid.stub.Pay(pay_request(f"k-load-{n}", leg(amount_minor=1_000)),
                                       timeout=10)).payment
        await paygrid.stub.RefundPayment(pb.RefundPaymentRequest(
            payment_id=paid.payment_id, idempotency_key=f"r-{n}",
            legs=[pb.RefundLeg(leg_index=0, amount=money("USD", 100 + n))]), timeout=10)
        return paid

    paid = await asyncio.gather(*(pay_and_refund(n) for n in range(20)))
    logged = await _all_events(_events_stub(paygrid))
    assert len(logged) == 20 * 5
    watched = [f.event for f in await _frames(stream, len(logged))]
    stream.cancel()
    assert watched == logged
    assert [e.seq for e in watched] == list(range(watched[0].seq, watched[0].seq + len(watched)))
    for payment in paid:
        versions = [e.aggregate_version for e in watched if e.aggregate_id == payment.payment_id]
        assert versions == [1, 2, 3, 4, 5], payment.payment_id
        stored = (await paygrid.stub.GetPayment(pb.GetPaymentRequest(
            payment_id=payment.payment_id))).payment
        assert stored.version == 5


async def test_a_batch_reports_created_then_completed_and_a_resubmission_resumes_it(
        paygrid) -> None:
    from paygrid.v1 import batch_service_pb2 as bpb
    from tests.support.batch_client import batch_stub, chunk, header, submit, tx

    stub = batch_stub(paygrid.channel)
    items = [tx(f"r{i:02d}") for i in range(12)]
    first = await submit(stub, header("b-ev", max_group_size=5), chunk(*items))
    assert first.summary.status == bpb.BATCH_STATUS_COMPLETED
    events = await _all_events(_events_stub(paygrid), type_prefix="io.paygrid.batch.")
    # Its three groups' events come between (tests/api/test_batch_events.py).
    assert [(e.type, e.aggregate_type, e.aggregate_id, e.aggregate_version) for e in events] == [
        (T("batch.created"), "batch", "b-ev", 1), *[(T("batch.group.completed"), "batch", "b-ev", v)
                                                   for v in (2, 3, 4)],
        (T("batch.completed"), "batch", "b-ev", 5)]
    created, completed = bpb.Batch(), bpb.Batch()
    assert events[0].data.Unpack(created) and events[-1].data.Unpack(completed)
    assert created.status == bpb.BATCH_STATUS_RECEIVING and created.version == 1
    stored = (await stub.GetBatch(bpb.GetBatchRequest(batch_id="b-ev"))).batch
    assert completed == stored and stored.version == 5
    assert completed.counts.succeeded == 12
    # Sent again: the batch is resumed, then completed again (nothing charged twice).
    again = await submit(stub, header("b-ev", max_group_size=5), chunk(*items))
    assert again.summary.counts.succeeded == 12
    events = await _all_events(_events_stub(paygrid), type_prefix="io.paygrid.batch.")
    # Nothing was charged again, so no group is reported again.
    assert [(e.type, e.aggregate_version) for e in events[5:]] == [
        (T("batch.resumed"), 6), (T("batch.completed"), 7)]
    assert (await stub.GetBatch(bpb.GetBatchRequest(batch_id="b-ev"))).batch.version == 7
    assert len(paygrid.captured_everywhere()) == 12


@pytest.mark.postgresql_only
async def test_a_lost_listen_connection_is_reopened(start_paygrid, postgres_databases,
                                                     monkeypatch) -> None:
    """B's LISTEN backend is ended (as a restart or failover would): B opens
    another, and a Pay through A wakes B's watcher again at once."""
    from tests.support.postgres_databases import postgres_rows

    dsn = await postgres_databases.create()
    a = await start_paygrid(postgres_dsn=dsn)
    b = await start_paygrid(postgres_dsn=dsn)
    parked = _ParkedWatcher(monkeypatch, b.app)
    stream = _events_stub(b).WatchEvents(ev.WatchEventsRequest(
        start=ev.START_POSITION_LATEST))
    await _frames(stream, 1, keepalives=True)  # open: its start position came
    lost = b.app.database.listener.server_pid
    assert postgres_rows(dsn, "SELECT pg_terminate_backend(?)", (lost,)) == [(True,)]
    await wait_for(lambda: b.app.database.listener.server_pid not in (None, lost),
                   "B to listen again")
    await parked.wait()
    on_a = (await a.stub.Pay(pay_request("k-after-relisten"))).payment
    frames = await _frames(stream, 3, keepalives=True)
    assert [f.event.aggregate_id for f in frames] == [on_a.payment_id] * 3
    assert parked.timeouts == 0  # a NOTIFY woke B, not its keep-alive timeout
    stream.cancel()
