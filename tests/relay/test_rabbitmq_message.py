"""An event's AMQP content header is encoded by paygrid itself (the relay
sends one message per event); the bytes on the wire are the ones an
aio-pika Message made before, so no consumer sees a difference."""

from __future__ import annotations

from datetime import datetime, timezone

import aio_pika
import pytest
from pamqp.header import ContentHeader

from paygrid_server.brokers.rabbitmq_message import (
    CONTENT_TYPE,
    amqp_body,
    amqp_content_header,
    cloud_event_headers,
)
from paygrid_server.domain.model.event import Event


def _event(seq: int, aggregate_type: str, version: int = 3, tenant_id: str = "acme") -> Event:
    return Event(seq=seq, event_id="0193a8f2-1c2d-7e3f-8a4b-5c6d7e8f9a0b",
                 type=f"io.paygrid.{aggregate_type}.succeeded.v1", tenant_id=tenant_id,
                 aggregate_type=aggregate_type, aggregate_id=f"{aggregate_type}_1",
                 aggregate_version=version, payload_type="paygrid.v1.Payment", payload=b"\x08\x01",
                 occurred_at_us=1_764_990_000_123_456)


# seq and version across each integer width pamqp picks for a table value
# (b, s, u, I, i, l), and a tenant id that is not ASCII.
@pytest.mark.parametrize("seq, aggregate_type, version, tenant_id", [
    (1, "payment", 3, "acme"), (200, "payment", 127, "acme"), (40_000, "batch", 128, "acme"),
    (2**20, "payment", 32_768, "acmé-ü"), (3_000_000_000, "batch", 2**31, "acme"),
    (2**40, "batch", 2**62, "acme")])
def test_the_content_header_is_the_bytes_an_aio_pika_message_sent(
        seq, aggregate_type, version, tenant_id) -> None:
    event = _event(seq, aggregate_type, version, tenant_id)
    before = aio_pika.Message(
        body=amqp_body(event), content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=event.event_id,
        type=event.type, app_id="paygrid", headers=cloud_event_headers(event),
        timestamp=datetime.fromtimestamp(event.occurred_at_us // 1_000_000, timezone.utc))
    size = len(amqp_body(event))
    encoded = amqp_content_header(event, size)
    assert encoded == ContentHeader(0, size, before.properties).marshal()
    decoded = ContentHeader()
    decoded.unmarshal(encoded)
    assert decoded.properties.delivery_mode == 2  # persistent
    assert decoded.properties.message_id == event.event_id
