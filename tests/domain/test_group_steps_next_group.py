"""GroupSteps tells its queue, with a group's results, whether the batch's
next group may start in the same transaction (marked ahead: see
storage/single_process_group_queue.py): only a batch that no failure can
stop may. A queue that records what it is told, and charges that succeed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from paygrid_server.domain.batches import group_steps
from paygrid_server.domain.batches.group_steps import GroupSteps
from paygrid_server.domain.model.batch import (
    Batch,
    BatchHeader,
    BatchItemStatus,
    BatchStatus,
    FailurePolicy,
    GroupingPolicy,
)
from paygrid_server.domain.payments_first import PaymentsFirst
from paygrid_server.domain.ports.group_queue import GroupLease
from tests.support.queued_batch import card_items

UID = "bat_steps"


class RecordingQueue:
    def __init__(self) -> None:
        self.saved: list[dict] = []

    async def group_items(self, batch_uid, group_no):
        return card_items(1, 3)

    async def mark_group_processing(self, batch_uid, group, lease=None) -> bool:
        return True

    async def save_group_results(self, batch_uid, group, lease=None, stops_batch=None,
                                 next_may_start=False) -> bool:
        self.saved.append({"group": group.group_no, "stops_batch": stops_batch,
                           "next_may_start": next_may_start})
        return True


class SucceedingCharger:
    def __init__(self, batch, path, per_item_channels) -> None:
        pass

    async def charge(self, items) -> None:
        for item in items:
            item.status, item.channel_reference = BatchItemStatus.SUCCEEDED, f"ch_{item.seq}"


class OneBatch:
    def __init__(self, policy: FailurePolicy) -> None:
        header = BatchHeader("b1", "payer", GroupingPolicy.CHANNEL, 3, 2, failure_policy=policy)
        self.batch = Batch("dev", "b1", UID, header, header.fingerprint(),
                           BatchStatus.PROCESSING, 1, 1)

    async def get_batch_by_uid(self, batch_uid):
        return self.batch


@pytest.mark.parametrize("policy, may_start", [
    (FailurePolicy.CONTINUE, True),
    (FailurePolicy.ALL_OR_NOTHING_PER_GROUP, True),
    (FailurePolicy.STOP_ON_FIRST_FAILURE, False),
])
async def test_only_a_batch_no_failure_can_stop_lets_its_next_group_start_with_the_results(
        policy, may_start, monkeypatch) -> None:
    monkeypatch.setattr(group_steps, "GroupCharger", SucceedingCharger)
    queue = RecordingQueue()
    steps = GroupSteps(OneBatch(policy), queue, SimpleNamespace(settlement=None),
                       PaymentsFirst(0))
    await steps.process(GroupLease(UID, 1, "card", "me", 1))
    assert queue.saved == [{"group": 1, "stops_batch": None, "next_may_start": may_start}]
