"""A group's result as SubmitBatch streams it: when this process stored the
group, the bytes its batch.group.completed event stored are streamed (one
parse instead of the group encoded a second time, field by field); they
must give the very message the fields give, for successes, failures and
unknown items alike. A group read back from storage has no such bytes."""

from __future__ import annotations

from paygrid.v1 import batch_service_pb2 as pb
from paygrid_server.domain.batches.events import GroupCompleted
from paygrid_server.domain.model.batch import BatchGroup, BatchItem, BatchItemStatus
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import Failure, FailureReason
from paygrid_server.storage.batch_group_events import GroupEvents, completed
from paygrid_server.transport.batch_messages import event_pb
from paygrid_server.transport.event_messages import ProtobufSnapshots


def _item(seq: int, status: BatchItemStatus, failure: Failure | None = None) -> BatchItem:
    return BatchItem(seq, f"ref-{seq}", f"payee_{seq:04d}", Money("EUR", 100 + seq), "",
                     None, "card", status=status, group_no=7,
                     channel_reference=f"ch_{seq}" if status is BatchItemStatus.SUCCEEDED else "",
                     failure=failure)


def _group(first_seq: int = 1) -> BatchGroup:
    return BatchGroup(7, "card/EUR", [
        _item(first_seq, BatchItemStatus.SUCCEEDED),
        _item(first_seq + 1, BatchItemStatus.FAILED,
              Failure(FailureReason.DECLINED, "do not honor", "05")),
        _item(first_seq + 2, BatchItemStatus.UNKNOWN,
              Failure(FailureReason.CHANNEL_TIMEOUT, "no answer")),
        _item(first_seq + 3, BatchItemStatus.SUCCEEDED),
    ], started_at_us=1_764_000_000_000_250, completed_at_us=1_764_000_000_012_750)


def _field_by_field(group: BatchGroup) -> bytes:
    assert group.stored_snapshot is None
    return event_pb(GroupCompleted(group)).SerializeToString()


def test_a_stored_group_streams_the_bytes_its_event_stored() -> None:
    group = _group()
    events = GroupEvents([completed(group)], ProtobufSnapshots())
    assert group.stored_snapshot is not None  # set where its event is encoded
    type_name, payload = group.stored_snapshot
    assert type_name == pb.GroupResult.DESCRIPTOR.full_name
    assert events.count == 3  # the group, the failed and the unknown item

    streamed = event_pb(GroupCompleted(group)).SerializeToString()
    assert streamed == _field_by_field(_group())
    assert pb.SubmitBatchResponse.FromString(streamed).group == pb.GroupResult.FromString(payload)


def test_what_is_streamed_is_what_was_stored() -> None:
    # The stored bytes are taken as they are: here another group's, so the
    # message streamed is that group's, not one made from these fields.
    other = _group(first_seq=40)
    ProtobufSnapshots().group(other)  # encoding alone stores nothing
    assert other.stored_snapshot is None
    GroupEvents([completed(other)], ProtobufSnapshots())
    group = _group()
    group.stored_snapshot = other.stored_snapshot
    streamed = pb.SubmitBatchResponse.FromString(event_pb(GroupCompleted(group)).SerializeToString())
    assert [item.reference for item in streamed.group.items] == [
        "ref-40", "ref-41", "ref-42", "ref-43"]


def test_bytes_of_another_message_type_are_not_streamed() -> None:
    group = _group()
    group.stored_snapshot = ("paygrid.v1.Batch", b"\x0a\x03bad")
    assert event_pb(GroupCompleted(group)).SerializeToString() == _field_by_field(_group())


def test_a_snapshot_takes_no_part_in_a_groups_equality() -> None:
    stored = _group()
    GroupEvents([completed(stored)], ProtobufSnapshots())
    assert stored == _group()
