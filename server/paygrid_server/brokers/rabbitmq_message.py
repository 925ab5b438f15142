"""An event as an AMQP 0-9-1 message: the CloudEvents AMQP binding's binary
mode (attributes as `cloudEvents:`-prefixed headers, the data as the body)
carried over RabbitMQ's headers table. No I/O.

The body is the serialized paygrid.v1.Event, exactly what ListEvents
returns, so one decoder serves both. docs/operations/rabbitmq.md has the table.
"""

from __future__ import annotations

from datetime import datetime, timezone

from aiormq import spec

from paygrid_server.domain.model.event import BATCH_AGGREGATE, PAYMENT_AGGREGATE, Event
from paygrid_server.transport.event_messages import event_pb

CONTENT_TYPE = "application/protobuf; proto=paygrid.v1.Event"
SPEC_VERSION = "1.0"
_CLOUD_TYPE_PREFIX = "io.paygrid."
_CLOUD_TYPE_SUFFIX = ".v1"
_SUBJECT_COLLECTIONS = {PAYMENT_AGGREGATE: "payments", BATCH_AGGREGATE: "batches"}


def routing_key(event: Event) -> str:
    """The type's name without prefix and version (`payment.succeeded`):
    consumers bind `payment.#`, `payment.refund.*`, `batch.#`."""
    return event.type.removeprefix(_CLOUD_TYPE_PREFIX).removesuffix(_CLOUD_TYPE_SUFFIX)


def subject(event: Event) -> str:
    return f"{_SUBJECT_COLLECTIONS.get(event.aggregate_type, event.aggregate_type)}/" \
           f"{event.aggregate_id}"


def time_rfc3339(occurred_at_us: int) -> str:
    moment = datetime.fromtimestamp(occurred_at_us / 1_000_000, timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def cloud_event_headers(event: Event) -> dict[str, str | int]:
    """CloudEvents attributes as headers. Extension names are lowercase
    letters and digits only (the spec's rule: no '-' or '_')."""
    return {
        "cloudEvents:specversion": SPEC_VERSION,
        "cloudEvents:id": event.event_id,
        "cloudEvents:source": f"/paygrid/tenants/{event.tenant_id}",
        "cloudEvents:type": event.type,
        "cloudEvents:subject": subject(event),
        "cloudEvents:time": time_rfc3339(event.occurred_at_us),
        "cloudEvents:paygridseq": event.seq,
        "cloudEvents:paygridversion": event.aggregate_version,
        "cloudEvents:paygridtenant": event.tenant_id,
    }


PERSISTENT = 2  # AMQP delivery mode: the broker writes the message to disk


def amqp_body(event: Event) -> bytes:
    return event_pb(event).SerializeToString(deterministic=True)


def amqp_properties(event: Event) -> spec.Basic.Properties:
    """The message's properties as aiormq sends them (what an aio-pika
    Message would build, without building the Message: the relay sends one
    per event). message_id is the event id: aiormq matches a returned
    message to its publish by it. priority 0 is sent, as aio-pika sent it."""
    return spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        priority=0,
        message_id=event.event_id,
        message_type=event.type,
        timestamp=datetime.fromtimestamp(event.occurred_at_us // 1_000_000, timezone.utc),
        app_id="paygrid",
        headers=cloud_event_headers(event))
