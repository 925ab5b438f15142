"""An event as an AMQP 0-9-1 message: the CloudEvents AMQP binding's binary
mode (attributes as `cloudEvents:`-prefixed headers, the data as the body)
carried over RabbitMQ's headers table. No I/O.

The body is the serialized paygrid.v1.Event, exactly what ListEvents
returns, so one decoder serves both. docs/operations/rabbitmq.md has the table.
"""

from __future__ import annotations

import struct
from datetime import datetime, timezone

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
APP_ID = "paygrid"


def amqp_body(event: Event) -> bytes:
    return event_pb(event).SerializeToString(deterministic=True)


# A content header's payload (AMQP 0-9-1, 4.2.6.1): class 60 (basic),
# weight 0, the body's size, the property flags, then the properties
# present in flag order. Encoded here rather than by pamqp's generic
# Basic.Properties, field by field per message, which was most of what a
# publish cost the relay; the bytes are pamqp's (tests/relay/test_rabbitmq_message.py
# holds them to an aio-pika Message's).
_HEADER_START = struct.Struct(">HHQH")
_BASIC_CLASS = 60
# content_type, headers, delivery_mode, priority, message_id, timestamp, type, app_id
_FLAGS = 0x8000 | 0x2000 | 0x1000 | 0x0800 | 0x0080 | 0x0040 | 0x0020 | 0x0008
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_SHORTSTR_MAX_BYTES = 255


def _shortstr(value: str) -> bytes:
    encoded = value.encode()
    assert len(encoded) <= _SHORTSTR_MAX_BYTES, value
    return bytes((len(encoded),)) + encoded


# Table integers as pamqp writes them: the smallest type that holds the value.
_TABLE_INTEGERS = ((-2**7, 2**7 - 1, b"b", struct.Struct(">b")),
                   (-2**15, 2**15 - 1, b"s", struct.Struct(">h")),
                   (0, 2**16 - 1, b"u", struct.Struct(">H")),
                   (-2**31, 2**31 - 1, b"I", struct.Struct(">i")),
                   (0, 2**32 - 1, b"i", struct.Struct(">I")),
                   (-2**63, 2**63 - 1, b"l", struct.Struct(">q")))


def _table_value(value: str | int) -> bytes:
    if isinstance(value, str):
        encoded = value.encode()
        return b"S" + _U32.pack(len(encoded)) + encoded
    for low, high, tag, packer in _TABLE_INTEGERS:
        if low <= value <= high:
            return tag + packer.pack(value)
    raise ValueError(f"{value} does not fit an AMQP table integer")


_CONSTANT_START = _shortstr(CONTENT_TYPE)
_CONSTANT_MIDDLE = bytes((PERSISTENT, 0))  # delivery_mode, priority
_APP_ID = _shortstr(APP_ID)


def amqp_content_header(event: Event, body_size: int) -> bytes:
    """The message's content header payload: content_type, the CloudEvents
    headers (keys sorted, as pamqp sorts them), delivery_mode 2, priority 0
    (sent, as aio-pika sent it), message_id the event id (returns are
    matched by it), timestamp (seconds), type, app_id."""
    headers = cloud_event_headers(event)
    table = b"".join(_shortstr(key) + _table_value(headers[key]) for key in sorted(headers))
    return b"".join((
        _HEADER_START.pack(_BASIC_CLASS, 0, body_size, _FLAGS), _CONSTANT_START,
        _U32.pack(len(table)), table, _CONSTANT_MIDDLE, _shortstr(event.event_id),
        _U64.pack(event.occurred_at_us // 1_000_000), _shortstr(event.type), _APP_ID))
