"""EventPublisher on RabbitMQ (aio-pika): publisher confirms, a durable
topic exchange, persistent messages, mandatory routing.

mandatory=True: RabbitMQ acks an unroutable message at once unless it is
mandatory, and then returns it before the ack. A return is a failure here,
as a nack is: a message no queue holds is not delivered. No robust
(auto-reconnecting) connection: the relay itself reconnects and republishes
from its cursor, which is what a lost confirm needs anyway."""

from __future__ import annotations

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection, AbstractExchange

from paygrid_server.brokers.rabbitmq_message import amqp_message, routing_key
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
        self._exchange: AbstractExchange | None = None

    async def connect(self) -> None:
        try:
            self._connection = await aio_pika.connect(
                self._url, timeout=CONNECT_TIMEOUT_S,
                client_properties={"connection_name": CONNECTION_NAME})
            channel = await self._connection.channel(publisher_confirms=True,
                                                     on_return_raises=True)
            self._exchange = await channel.declare_exchange(
                self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        except Exception as error:  # noqa: BLE001 - whatever it is, the broker is not usable
            await self.close()
            raise BrokerUnavailable(f"{type(error).__name__}: {error}") from error

    async def publish(self, event: Event) -> None:
        exchange = self._exchange
        if exchange is None:
            raise PublishFailed("not connected")
        try:
            confirm = await exchange.publish(amqp_message(event), routing_key(event),
                                             mandatory=True, timeout=CONFIRM_TIMEOUT_S)
        except aio_pika.exceptions.PublishError as error:
            raise PublishFailed(f"seq {event.seq} returned by the broker as unroutable "
                                f"(no queue bound for {routing_key(event)!r})") from error
        except Exception as error:  # noqa: BLE001 - nack, closed connection, timeout
            raise PublishFailed(f"seq {event.seq}: {type(error).__name__}: {error}") from error
        if not isinstance(confirm, aiormq.spec.Basic.Ack):
            raise PublishFailed(f"seq {event.seq} not confirmed: {confirm!r}")

    async def close(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too
                pass
