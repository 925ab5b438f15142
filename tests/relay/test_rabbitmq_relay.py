"""The RabbitMQ relay against a real broker, a vhost per test: what a
message carries, in seq order; a cursor that never passes an event the
broker did not confirm (a return is no confirm); a connection cut while
confirms are out, and every event still arrives."""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import datetime, timezone

import aio_pika

import pytest

from paygrid.v1 import event_service_pb2 as ev
from paygrid.v1 import event_service_pb2_grpc as ev_grpc
from paygrid_server.config import EventsRabbitMqConfig
from paygrid_server.domain.events.event_relay import RelayState
from paygrid_server.storage.postgres.relay_leadership import RELAY_LOCK_KEY_SQL
from tests.api.test_metrics import scrape
from tests.conftest import leg, pay_request
from tests.support.rabbitmq import EXCHANGE, GatedProxy, rabbitmq_close_connection, url
from tests.support.server_process import wait_for

T = "io.paygrid.{}.v1".format


def _relay_config(amqp_url: str) -> EventsRabbitMqConfig:
    return EventsRabbitMqConfig(url=amqp_url, exchange=EXCHANGE)


def _saved_cursor(paygrid) -> int | None:
    rows = paygrid.rows("SELECT cursor FROM event_consumers WHERE tenant_id = '' "
                        "AND name = 'relay:rabbitmq'")
    return rows[0][0] if rows else None


async def _logged_events(paygrid) -> list[ev.Event]:
    stub = ev_grpc.EventServiceStub(paygrid.channel)
    return list((await stub.ListEvents(ev.ListEventsRequest(page_size=1000))).events)


@asynccontextmanager
async def _relayed_through_a_proxy(vhost, start_paygrid):
    """A consumer, and paygrid relaying through a GatedProxy: (paygrid, proxy, consumed)."""
    consumed = await vhost.consume()
    proxy = GatedProxy()
    await proxy.start()
    try:
        yield (await start_paygrid(events_rabbitmq=_relay_config(url(vhost.name, proxy.port))),
               proxy, consumed)
    finally:
        await proxy.close()


async def test_events_are_published_in_seq_order_with_cloud_event_headers(
        vhost, start_paygrid) -> None:
    consumed = await vhost.consume()
    paygrid = await start_paygrid(events_rabbitmq=_relay_config(vhost.url))
    for i in range(3):
        await paygrid.stub.Pay(pay_request(f"k-{i}", leg(f"payee_000{i}", "EUR", 1_000 + i)),
                               timeout=10)
    logged = await _logged_events(paygrid)
    assert len(logged) == 9
    stats = paygrid.app.event_relay.stats
    await wait_for(lambda: len(consumed.messages) >= 9, "9 messages")
    await wait_for(lambda: stats.cursor == logged[-1].seq, "the cursor past the last")
    assert _saved_cursor(paygrid) == logged[-1].seq  # saved before the relay moves on

    assert consumed.seqs() == [e.seq for e in logged]  # one relay: seq order
    for message, event in zip(consumed.messages, logged):
        assert ev.Event.FromString(message.body) == event  # what ListEvents returns
        assert message.message_id == event.event_id
        name = event.type.removeprefix("io.paygrid.").removesuffix(".v1")
        assert message.routing_key == name
        assert message.exchange == EXCHANGE
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.content_type == "application/protobuf; proto=paygrid.v1.Event"
        assert message.type == event.type
        headers = message.headers
        assert headers["cloudEvents:specversion"] == "1.0"
        assert headers["cloudEvents:id"] == event.event_id
        assert headers["cloudEvents:type"] == event.type
        assert headers["cloudEvents:source"] == "/paygrid/tenants/dev"
        assert headers["cloudEvents:subject"] == f"payments/{event.aggregate_id}"
        assert headers["cloudEvents:time"].endswith("Z")  # RFC 3339, UTC
        assert datetime.fromisoformat(headers["cloudEvents:time"]) == \
            event.time.ToDatetime(tzinfo=timezone.utc)
        assert headers["cloudEvents:paygridseq"] == event.seq
        assert headers["cloudEvents:paygridversion"] == event.aggregate_version
        assert headers["cloudEvents:paygridtenant"] == "dev"
    assert (stats.lag, stats.cursor) == (0, logged[-1].seq)
    assert stats.confirmed == stats.published == 9
    page = await scrape(paygrid.app.metrics_port)
    assert page.value("paygrid_event_relay_lag_events") == 0
    assert page.value("paygrid_event_relay_cursor") == logged[-1].seq
    assert page.value("paygrid_event_relay_published_total") == 9
    assert page.value("paygrid_event_relay_confirmed_total") == 9
    assert page.value("paygrid_event_relay_state", state="relaying") == 1


async def test_a_returned_event_stops_the_cursor_until_a_queue_takes_it(
        vhost, start_paygrid) -> None:
    # Only created and the outcome are routable: the leg event in between is
    # returned (mandatory), while the one after it is confirmed.
    partial = await vhost.consume(("payment.created", "payment.succeeded"))
    paygrid = await start_paygrid(events_rabbitmq=_relay_config(vhost.url))
    await paygrid.stub.Pay(pay_request("k-ret", leg("payee_0001", "EUR", 500)), timeout=10)
    created, leg_event, outcome = await _logged_events(paygrid)
    assert leg_event.type == T("payment.leg.succeeded")
    stats = paygrid.app.event_relay.stats
    # Two sessions ended by the return: it was published again, and returned again.
    await wait_for(lambda: stats.failures >= 2, "the leg event returned twice")
    assert stats.cursor == created.seq  # not past the returned one, though the next is confirmed
    assert _saved_cursor(paygrid) == created.seq
    # The event after it was confirmed all the same.
    await wait_for(lambda: outcome.seq in partial.seqs(), "the outcome routed")

    everything = await vhost.consume(("#",))
    await wait_for(lambda: stats.cursor == outcome.seq, "the cursor past all three")
    assert _saved_cursor(paygrid) == outcome.seq
    # Republished from the cursor and confirmed: in the queue, on its way to the consumer.
    await wait_for(lambda: leg_event.seq in everything.seqs(), "the leg event consumed")


async def test_a_connection_cut_with_confirms_outstanding_republishes_from_the_cursor(
        vhost, start_paygrid) -> None:
    async with _relayed_through_a_proxy(vhost, start_paygrid) as (paygrid, proxy, consumed):
        stats = paygrid.app.event_relay.stats
        await paygrid.stub.Pay(pay_request("k-1", leg("payee_0001", "EUR", 700)), timeout=10)
        first = await _logged_events(paygrid)
        await wait_for(lambda: stats.cursor == first[-1].seq, "the first payment confirmed")
        await wait_for(lambda: stats.state is RelayState.RELAYING, "idle relay")

        proxy.hold_answers()  # the broker gets the next events; its confirms wait here
        await paygrid.stub.Pay(pay_request("k-2", leg("payee_0002", "EUR", 800)), timeout=10)
        logged = await _logged_events(paygrid)
        held = first[-1].seq + 1  # payment.created: the relay publishes it at once
        await wait_for(lambda: held in consumed.seqs(), "the held event routed")
        assert stats.cursor == first[-1].seq  # routed, but never confirmed to the relay

        proxy.cut()
        await wait_for(lambda: stats.cursor == logged[-1].seq, "the cursor after a reconnect")
        assert stats.failures >= 1
        # What the cut session published (held first, perhaps more: the relay
        # may have woken once for all three), then all again from the cursor.
        rest = [e.seq for e in logged[len(first):]]
        # Confirmed: in the queue, not yet necessarily with its consumer. The
        # tail is `rest` once the republished stretch is all in (after at least
        # the held event from the cut session).
        await wait_for(lambda: len(consumed.seqs()) > len(first) + len(rest) and
                       consumed.seqs()[-len(rest):] == rest, "the republished events consumed")
        seqs = consumed.seqs()
        assert set(seqs) == {e.seq for e in logged}  # none lost
        cut_session = seqs[len(first):len(seqs) - len(rest)]
        assert cut_session, f"nothing published again after the cut: {seqs}"
        assert cut_session[0] == held and cut_session == rest[:len(cut_session)]
        assert seqs[:len(first)] == [e.seq for e in first]
        assert seqs[len(seqs) - len(rest):] == rest


async def test_events_written_while_confirms_are_held_go_out_at_once(
        vhost, start_paygrid) -> None:
    """The sliding window: a held confirm holds the cursor back, not the
    publishing (the window it replaced waited for every confirm first)."""
    async with _relayed_through_a_proxy(vhost, start_paygrid) as (paygrid, proxy, consumed):
        stats = paygrid.app.event_relay.stats
        await wait_for(lambda: stats.state is RelayState.RELAYING, "the relay connected")
        proxy.hold_answers()  # from here on, no confirm reaches the relay
        for key in ("k-1", "k-2"):  # two payments, each event written after the last went out
            await paygrid.stub.Pay(pay_request(key, leg("payee_0001", "EUR", 700)), timeout=10)
            logged = [e.seq for e in await _logged_events(paygrid)]
            await wait_for(lambda: consumed.seqs() == logged, f"{key}'s events out, unconfirmed")
        assert stats.cursor == 0 and _saved_cursor(paygrid) in (None, 0)
        assert stats.confirmed == 0 and stats.published == len(logged) == 6

        proxy.cut()  # the held confirms are lost: all six go out again
        await wait_for(lambda: stats.cursor == logged[-1], "the cursor after a reconnect")
        assert _saved_cursor(paygrid) == logged[-1]
        # Confirmed: in the queue, not yet necessarily with its consumer.
        await wait_for(lambda: len(consumed.messages) >= 2 * len(logged), "the six consumed")
        assert consumed.seqs() == logged + logged


async def test_an_unreachable_broker_does_not_stop_payments_and_shows_as_lag(
        vhost, start_paygrid, capsys) -> None:
    proxy = GatedProxy()
    await proxy.start()
    port = proxy.port
    await proxy.close()  # nothing listens there now
    paygrid = await start_paygrid(events_rabbitmq=_relay_config(url(vhost.name, port)))
    await paygrid.stub.Pay(pay_request("k-down", leg("payee_0001", "EUR", 900)), timeout=10)
    logged = await _logged_events(paygrid)
    stats = paygrid.app.event_relay.stats
    await wait_for(lambda: stats.failures >= 2 and stats.head_seq == logged[-1].seq,
                   "the relay retried")
    assert stats.lag == len(logged) and stats.cursor == 0
    page = await scrape(paygrid.app.metrics_port)
    assert page.value("paygrid_event_relay_lag_events") == len(logged)  # what operators alert on
    assert page.value("paygrid_event_relay_failures_total") >= 2
    assert page.value("paygrid_event_relay_state", state="relaying") == 0
    # Payments are still served: the Pay above answered. One line, not one per retry:
    warnings = [line for line in capsys.readouterr().out.splitlines()
                if "event_relay.failed" in line]
    assert len(warnings) == 1 and "Connect call failed" in warnings[0] \
        and "[events.rabbitmq] url" in warnings[0] and "guest:***@" in warnings[0], warnings


@pytest.mark.postgresql_only
async def test_a_leader_whose_lock_connection_breaks_stops_and_leads_again(
        vhost, start_paygrid) -> None:
    consumed = await vhost.consume()
    paygrid = await start_paygrid(events_rabbitmq=_relay_config(vhost.url))
    stats = paygrid.app.event_relay.stats
    await wait_for(lambda: stats.state is RelayState.RELAYING, "the relay leading")
    holder = paygrid.rows(
        f"SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        f"AND classid::bigint = (({RELAY_LOCK_KEY_SQL}) >> 32) & 4294967295 "
        f"AND objid::bigint = ({RELAY_LOCK_KEY_SQL}) & 4294967295")
    assert len(holder) == 1
    paygrid.rows("SELECT pg_terminate_backend(?)", (holder[0][0],))
    await wait_for(lambda: stats.leads == 2, "the lead lost and taken again")
    await paygrid.stub.Pay(pay_request("k-lead", leg("payee_0001", "EUR", 600)), timeout=10)
    logged = await _logged_events(paygrid)
    await wait_for(lambda: consumed.seqs() == [e.seq for e in logged], "the events relayed")


async def test_a_connection_the_broker_closes_is_reopened_and_nothing_is_lost(
        vhost, start_paygrid) -> None:
    consumed = await vhost.consume()
    paygrid = await start_paygrid(events_rabbitmq=_relay_config(vhost.url))
    stats = paygrid.app.event_relay.stats
    await paygrid.stub.Pay(pay_request("k-1", leg("payee_0001", "EUR", 700)), timeout=10)
    first = await _logged_events(paygrid)
    await wait_for(lambda: stats.cursor == first[-1].seq, "the first payment confirmed")
    (connection,) = vhost.relay_connections()
    rabbitmq_close_connection(connection)  # server side, as an operator or a broker restart does
    await wait_for(lambda: vhost.relay_connections() == [], "the connection gone")

    await paygrid.stub.Pay(pay_request("k-2", leg("payee_0002", "EUR", 800)), timeout=10)
    logged = await _logged_events(paygrid)
    await wait_for(lambda: stats.cursor == logged[-1].seq, "the second payment confirmed")
    assert stats.failures >= 1
    # Confirmed: in the queue, not yet necessarily with its consumer.
    every = {e.seq for e in logged}
    await wait_for(lambda: every <= set(consumed.seqs()), "every event consumed")
    assert set(consumed.seqs()) == every
