"""EventPublisher on RabbitMQ: publisher confirms, a durable topic exchange,
persistent messages, mandatory routing, over the relay's own confirming
connection (amqp_confirming_connection.py: what a general client costs per
message, the relay paid per event).

mandatory=True: RabbitMQ acks an unroutable message at once unless it is
mandatory, and then returns it before the ack. A return is a failure here,
as a nack is: a message no queue holds is not delivered. No reconnecting
connection: the relay itself reconnects and republishes from its cursor,
which is what a lost confirm needs anyway."""

from __future__ import annotations

from paygrid_server.brokers.amqp_address import AmqpAddress
from paygrid_server.brokers.amqp_confirming_connection import (
    AmqpError,
    ConfirmingAmqpConnection,
    Returned,
)
from paygrid_server.brokers.rabbitmq_message import amqp_body, amqp_content_header, routing_key
from paygrid_server.domain.model.event import Event
from paygrid_server.domain.ports.event_relay import BrokerUnavailable, PublishFailed

CONNECT_TIMEOUT_S = 10.0
# A confirm not back by then counts as failed (the event is published again).
CONFIRM_TIMEOUT_S = 30.0
CONNECTION_NAME = "paygrid-event-relay"


class RabbitMqPublisher:
    def __init__(self, url: str, exchange: str,
                 confirm_timeout_s: float = CONFIRM_TIMEOUT_S) -> None:
        self._url = url
        self._exchange = exchange
        self._confirm_timeout_s = confirm_timeout_s
        self._connection: ConfirmingAmqpConnection | None = None

    async def connect(self) -> None:
        connection = ConfirmingAmqpConnection()
        try:
            # Read at each connect: a TLS file named in the URL that cannot be
            # read is then one of the relay's logged, retried problems.
            address = AmqpAddress.from_url(self._url)
            await connection.open(address, self._exchange, CONNECTION_NAME,
                                  CONNECT_TIMEOUT_S, self._confirm_timeout_s)
        except Exception as error:  # noqa: BLE001 - whatever it is, the broker is not usable
            connection.abort("the connection could not be opened")
            raise BrokerUnavailable(f"{type(error).__name__}: {error}") from error
        self._connection = connection

    async def publish(self, event: Event) -> None:
        connection = self._connection
        if connection is None:
            raise PublishFailed("not connected")
        try:
            body = amqp_body(event)
            await connection.publish(self._exchange, routing_key(event),
                                     amqp_content_header(event, len(body)), body, event.event_id)
        except Returned as error:
            raise PublishFailed(f"seq {event.seq} returned by the broker as unroutable "
                                f"(no queue bound for {routing_key(event)!r})") from error
        except AmqpError as error:
            raise PublishFailed(f"seq {event.seq}: {error}") from error

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
