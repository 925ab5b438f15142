"""The relay's RabbitMQ publisher (brokers/rabbitmq_publisher.py over
brokers/amqp_confirming_connection.py) on its own, against a real broker:
what it confirms, what it fails and why, heartbeats both ways, a body
larger than a frame, and URLs read as before."""

from __future__ import annotations

import asyncio
import gc
import ssl
from contextlib import asynccontextmanager
from typing import AsyncIterator

import aio_pika
import pytest

from paygrid_server.brokers.amqp_address import AmqpAddress
from paygrid_server.brokers.amqp_confirming_connection import ConfirmingAmqpConnection
from paygrid_server.brokers.rabbitmq_message import amqp_body
from paygrid_server.brokers.rabbitmq_publisher import RabbitMqPublisher
from paygrid_server.domain.model.event import Event
from paygrid_server.domain.ports.event_relay import BrokerUnavailable, PublishFailed
from tests.support.local_process import free_loopback_port
from tests.support.rabbitmq import EXCHANGE, GatedProxy, url
from tests.support.rabbitmq_connection import open_connection
from tests.support.server_process import wait_for

HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"
# Bounds for what must happen within a heartbeat or two (1 s here).
WITHIN_S = 10


def _event(seq: int, payload: bytes = b"\x08\x01", name: str = "payment.succeeded") -> Event:
    return Event(seq=seq, event_id=f"0193a8f2-1c2d-7e3f-8a4b-{seq:012d}",
                 type=f"io.paygrid.{name}.v1", tenant_id="acme",
                 aggregate_type="payment", aggregate_id=f"pay_{seq}", aggregate_version=1,
                 payload_type="paygrid.v1.Payment", payload=payload,
                 occurred_at_us=1_764_990_000_123_456 + seq)


def connections_left_open() -> list[ConfirmingAmqpConnection]:
    gc.collect()
    return [found for found in gc.get_objects()
            if isinstance(found, ConfirmingAmqpConnection) and found.is_open]


async def test_a_broker_that_cannot_be_reached_leaves_no_connection_open() -> None:
    """The relay retries such a broker for as long as it is down: a connection
    left open on each attempt would pile up."""
    assert connections_left_open() == []
    publisher = RabbitMqPublisher(f"amqp://guest:guest@127.0.0.1:{free_loopback_port()}/",
                                  EXCHANGE)  # nothing listens there
    for _ in range(2):
        with pytest.raises(BrokerUnavailable, match="Connect call failed"):
            await publisher.connect()
        assert connections_left_open() == []


async def test_refused_credentials_and_vhosts_are_named(vhost) -> None:
    wrong_password = RabbitMqPublisher(url(vhost.name).replace(":guest@", ":wrong@"), EXCHANGE)
    with pytest.raises(BrokerUnavailable, match="ACCESS_REFUSED"):
        await wrong_password.connect()
    no_such_vhost = RabbitMqPublisher(url(vhost.name + "_missing"), EXCHANGE)
    with pytest.raises(BrokerUnavailable, match="NOT_ALLOWED|not found|access to vhost"):
        await no_such_vhost.connect()
    assert connections_left_open() == []


async def test_a_burst_is_confirmed_and_arrives_in_order(vhost) -> None:
    """One write per loop turn carries the whole burst; the broker's acks
    (several with `multiple`) settle every confirm once."""
    consumed = await vhost.consume()
    publisher = RabbitMqPublisher(vhost.url, EXCHANGE)
    await publisher.connect()
    try:
        async with asyncio.timeout(WITHIN_S):
            await asyncio.gather(*(publisher.publish(_event(seq)) for seq in range(1, 1_001)))
    finally:
        await publisher.close()
    await wait_for(lambda: len(consumed.messages) >= 1_000, "1,000 messages")
    assert consumed.seqs() == list(range(1, 1_001))
    assert connections_left_open() == []


async def test_a_body_larger_than_a_frame_arrives_whole(vhost) -> None:
    consumed = await vhost.consume()
    publisher = RabbitMqPublisher(vhost.url, EXCHANGE)
    await publisher.connect()
    event = _event(1, payload=bytes(range(256)) * 1_200)  # 300 KiB: three body frames
    try:
        await publisher.publish(event)
    finally:
        await publisher.close()
    await wait_for(lambda: len(consumed.messages) >= 1, "the message")
    assert consumed.messages[0].body == amqp_body(event)


async def test_an_unroutable_event_fails_and_the_next_routable_one_is_confirmed(vhost) -> None:
    consumed = await vhost.consume(binding_keys=("payment.created",))
    publisher = RabbitMqPublisher(vhost.url, EXCHANGE)
    await publisher.connect()
    try:
        with pytest.raises(PublishFailed, match="unroutable"):
            await publisher.publish(_event(1))  # payment.succeeded: no queue bound
        await publisher.publish(_event(2, name="payment.created"))
    finally:
        await publisher.close()
    await wait_for(lambda: len(consumed.messages) >= 1, "the message")
    assert consumed.seqs() == [2]


async def test_a_message_the_queue_refuses_is_nacked(vhost) -> None:
    """A queue at its length limit that rejects publishes makes the broker
    nack: one message is taken, the next refused."""
    connection = await open_connection(vhost.url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        queue = await channel.declare_queue(
            exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        await queue.bind(exchange, "#")
        publisher = RabbitMqPublisher(vhost.url, EXCHANGE)
        await publisher.connect()
        try:
            await publisher.publish(_event(1))
            with pytest.raises(PublishFailed, match="nacked"):
                await publisher.publish(_event(2))
        finally:
            await publisher.close()
    finally:
        await connection.close()


@asynccontextmanager
async def _connected_through_a_proxy(vhost, query: str, **options) -> AsyncIterator[
        tuple[RabbitMqPublisher, GatedProxy]]:
    proxy = GatedProxy()
    await proxy.start()
    publisher = RabbitMqPublisher(url(vhost.name, proxy.port) + query, EXCHANGE, **options)
    try:
        await publisher.connect()
        yield publisher, proxy
    finally:
        await publisher.close()
        await proxy.close()


async def test_heartbeats_go_out_while_idle(vhost) -> None:
    async with _connected_through_a_proxy(vhost, "?heartbeat=1") as (_, proxy):
        async with asyncio.timeout(WITHIN_S):
            await proxy.client_sent(HEARTBEAT_FRAME)


# A broker that stops answering stops its heartbeats with its confirms: after
# two heartbeats' silence the connection is given up. Without heartbeats, a
# confirm not back within the confirm timeout ends it the same way.
@pytest.mark.parametrize("query, options, failure", [
    ("?heartbeat=1", {}, "no heartbeat from the broker for 2 s"),
    ("?heartbeat=0", {"confirm_timeout_s": 1.5}, "no confirm within 1.5 s")])
async def test_a_broker_that_stops_answering_fails_the_confirms_out(
        vhost, query, options, failure) -> None:
    await vhost.consume()
    async with _connected_through_a_proxy(vhost, query, **options) as (publisher, proxy):
        proxy.hold_answers()
        async with asyncio.timeout(WITHIN_S):
            with pytest.raises(PublishFailed, match=failure):
                await publisher.publish(_event(1))


def test_urls_are_read_as_before() -> None:
    plain = AmqpAddress.from_url("amqp://relay:p%40ss@broker.internal:5673/payments%2Fprod"
                                 "?heartbeat=15")
    assert (plain.host, plain.port, plain.user, plain.password, plain.vhost,
            plain.heartbeat_s, plain.tls) == ("broker.internal", 5673, "relay", "p@ss",
                                              "payments/prod", 15, None)
    for bare in ("amqp://broker", "amqp://broker/"):
        address = AmqpAddress.from_url(bare)
        assert (address.port, address.user, address.password, address.vhost,
                address.heartbeat_s) == (5672, "guest", "guest", "/", 60)
    assert AmqpAddress.from_url("amqp://broker/%2F").vhost == "/"
    secure = AmqpAddress.from_url("amqps://broker")
    assert secure.port == 5671 and secure.tls is not None
    assert secure.tls.verify_mode == ssl.CERT_REQUIRED and secure.tls.check_hostname
    unverified = AmqpAddress.from_url("amqps://broker?no_verify_ssl=1").tls
    assert unverified.verify_mode == ssl.CERT_NONE and not unverified.check_hostname
