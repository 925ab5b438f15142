"""Events and their snapshots as paygrid.v1 messages. No logic."""

from __future__ import annotations

from google.protobuf import any_pb2, timestamp_pb2

from paygrid.v1 import batch_service_pb2 as batch_pb2
from paygrid.v1 import event_service_pb2 as pb
from paygrid_server.domain.batches.service import batch_report
from paygrid_server.domain.model import clock
from paygrid_server.domain.model.batch import Batch, BatchCounts, BatchGroup, BatchItem
from paygrid_server.domain.model.event import Event
from paygrid_server.domain.model.payment import Payment
from paygrid_server.domain.model.refund import Refund
from paygrid_server.transport.batch_messages import batch_item_pb, batch_pb, group_pb
from paygrid_server.transport.payment_messages import refund_pb
from paygrid_server.transport.recent_payment_messages import RecentPaymentMessages

_TYPE_URL_PREFIX = "type.googleapis.com/"
_BATCH_ITEM = batch_pb2.BatchItem.DESCRIPTOR.full_name


class ProtobufSnapshots:
    """The SnapshotEncoder the stores write payloads with: the API's own
    Payment and Refund messages, so an event's payload decodes as what
    GetPayment and RefundPayment answer."""

    def __init__(self) -> None:
        self._recent = RecentPaymentMessages()

    def payment(self, payment: Payment, versions: range) -> tuple[str, list[bytes]]:
        message = self._recent.message(payment)  # once for all versions: the costly part
        payloads = []
        for version in versions:
            message.version = version
            payloads.append(message.SerializeToString(deterministic=True))
        return message.DESCRIPTOR.full_name, payloads

    def refund(self, refund: Refund) -> tuple[str, bytes]:
        message = refund_pb(refund)
        return message.DESCRIPTOR.full_name, message.SerializeToString(deterministic=True)

    def batch(self, batch: Batch, counts: BatchCounts,
              group_processing_us: list[int]) -> tuple[str, bytes]:
        message = batch_pb(batch_report(batch, counts, group_processing_us, clock.now_us()))
        return message.DESCRIPTOR.full_name, message.SerializeToString(deterministic=True)

    def group(self, group: BatchGroup) -> tuple[str, bytes]:
        message = group_pb(group)
        return message.DESCRIPTOR.full_name, message.SerializeToString(deterministic=True)

    def batch_items(self, items: list[BatchItem]) -> tuple[str, list[bytes]]:
        return _BATCH_ITEM, [batch_item_pb(item).SerializeToString(deterministic=True)
                             for item in items]


def event_pb(event: Event) -> pb.Event:
    time = timestamp_pb2.Timestamp()
    time.FromMicroseconds(event.occurred_at_us)
    return pb.Event(
        event_id=event.event_id, type=event.type, seq=event.seq,
        aggregate_type=event.aggregate_type, aggregate_id=event.aggregate_id,
        aggregate_version=event.aggregate_version, time=time,
        data=any_pb2.Any(type_url=_TYPE_URL_PREFIX + event.payload_type, value=event.payload))
