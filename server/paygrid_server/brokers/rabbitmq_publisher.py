"""EventPublisher on RabbitMQ: publisher confirms, a durable topic exchange,
persistent messages, mandatory routing. aio-pika connects and declares;
each event is published on aio-pika's underlying aiormq channel, without an
aio-pika Message and Exchange.publish around it (the relay publishes one
message per event, and those layers cost it per message).

mandatory=True: RabbitMQ acks an unroutable message at once unless it is
mandatory, and then returns it before the ack. A return is a failure here,
as a nack is: a message no queue holds is not delivered. No robust
(auto-reconnecting) connection: the relay itself reconnects and republishes
from its cursor, which is what a lost confirm needs anyway."""

from __future__ import annotations

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection

from paygrid_server.brokers.rabbitmq_connection import close_quietly, open_connection
from paygrid_server.brokers.rabbitmq_message import amqp_body, amqp_properties, routing_key
from paygrid_server.domain.model.event import Event
from paygrid_server.domain.ports.event_relay import BrokerUnavailable, PublishFailed

CONNECT_TIMEOUT_S = 10.0
# A confirm not back by then counts as failed (the event is published again).
CONFIRM_TIMEOUT_S = 30.0
CONNECTION_NAME = "paygrid-event-relay"


class RabbitMqPublisher:
    def __init__(self, url: str, exchange: str) -> None:
        self._url = url
        self._exchange_name = exchange
        self._connection: AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None

    async def connect(self) -> None:
        try:
            self._connection = await open_connection(
                self._url, timeout_s=CONNECT_TIMEOUT_S, name=CONNECTION_NAME)
            channel = await self._connection.channel(publisher_confirms=True,
                                                     on_return_raises=True)
            await channel.declare_exchange(
                self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
            self._channel = await channel.get_underlay_channel()
        except Exception as error:  # noqa: BLE001 - whatever it is, the broker is not usable
            await self.close()
            raise BrokerUnavailable(f"{type(error).__name__}: {error}") from error

    async def publish(self, event: Event) -> None:
        channel = self._channel
        if channel is None:
            raise PublishFailed("not connected")
        try:
            # wait=False: the confirm is what is waited for, not the socket's drain.
            confirm = await channel.basic_publish(
                amqp_body(event), exchange=self._exchange_name, routing_key=routing_key(event),
                properties=amqp_properties(event), mandatory=True, timeout=CONFIRM_TIMEOUT_S,
                wait=False)
        except aiormq.exceptions.PublishError as error:
            raise PublishFailed(f"seq {event.seq} returned by the broker as unroutable "
                                f"(no queue bound for {routing_key(event)!r})") from error
        except Exception as error:  # noqa: BLE001 - nack, closed connection, timeout
            raise PublishFailed(f"seq {event.seq}: {type(error).__name__}: {error}") from error
        if not isinstance(confirm, aiormq.spec.Basic.Ack):
            raise PublishFailed(f"seq {event.seq} not confirmed: {confirm!r}")

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            await close_quietly(connection)
