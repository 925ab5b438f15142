"""The relay's RabbitMQ publisher (brokers/rabbitmq_publisher.py) on its own:
a broker that cannot be reached leaves no connection behind."""

from __future__ import annotations

import gc

import aio_pika
import pytest

from paygrid_server.brokers.rabbitmq_publisher import RabbitMqPublisher
from paygrid_server.domain.ports.event_relay import BrokerUnavailable
from tests.support.local_process import free_loopback_port


def connections_left_open() -> list[aio_pika.Connection]:
    gc.collect()
    return [found for found in gc.get_objects()
            if isinstance(found, aio_pika.Connection) and not found.is_closed]


async def test_a_broker_that_cannot_be_reached_leaves_no_connection_open() -> None:
    """The relay retries such a broker for as long as it is down: a connection
    left open on each attempt would pile up until the collector's __del__
    warned that its close was never awaited."""
    assert connections_left_open() == []
    publisher = RabbitMqPublisher(f"amqp://guest:guest@127.0.0.1:{free_loopback_port()}/",
                                  "paygrid.events")  # nothing listens there
    for _ in range(2):
        with pytest.raises(BrokerUnavailable, match="Connect call failed"):
            await publisher.connect()
        assert connections_left_open() == []
