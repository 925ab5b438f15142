"""An event's AMQP properties are built for aiormq directly (the relay sends
one message per event); the bytes on the wire are the ones an aio-pika
Message made before, so no consumer sees a difference."""

from __future__ import annotations

from datetime import datetime, timezone

import aio_pika
import pytest
from pamqp.header import ContentHeader

from paygrid_server.brokers.rabbitmq_message import (
    CONTENT_TYPE,
    amqp_body,
    amqp_properties,
    cloud_event_headers,
)
from paygrid_server.domain.model.event import Event


def _event(seq: int, aggregate_type: str) -> Event:
    return Event(seq=seq, event_id="0193a8f2-1c2d-7e3f-8a4b-5c6d7e8f9a0b",
                 type=f"io.paygrid.{aggregate_type}.succeeded.v1", tenant_id="acme",
                 aggregate_type=aggregate_type, aggregate_id=f"{aggregate_type}_1",
                 aggregate_version=3, payload_type="paygrid.v1.Payment", payload=b"\x08\x01",
                 occurred_at_us=1_764_990_000_123_456)


@pytest.mark.parametrize("seq, aggregate_type", [(1, "payment"), (2**40, "batch")])
def test_the_properties_are_the_bytes_an_aio_pika_message_sent(seq, aggregate_type) -> None:
    event = _event(seq, aggregate_type)
    before = aio_pika.Message(
        body=amqp_body(event), content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=event.event_id,
        type=event.type, app_id="paygrid", headers=cloud_event_headers(event),
        timestamp=datetime.fromtimestamp(event.occurred_at_us // 1_000_000, timezone.utc))
    size = len(amqp_body(event))
    assert ContentHeader(0, size, amqp_properties(event)).marshal() == \
        ContentHeader(0, size, before.properties).marshal()
    assert amqp_properties(event).delivery_mode == 2  # persistent
