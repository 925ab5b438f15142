"""Batch failure policies that undo or withhold charges:

ALL_OR_NOTHING_PER_GROUP - a group is paid whole or not at all. When an
item of a charged group failed or stayed unknown, every item that holds (or
may hold) money is reversed: voided, or refunded when the channel can no
longer void. A group interrupted by a crash is reversed whole and its items
charged again, as a new group, under new keys. A reversal the channel could
not confirm leaves the item UNKNOWN with REVERSAL_PENDING, and it is
reversed on the next submission: never left half-paid.

STOP_ON_FIRST_FAILURE - once an item failed, items not charged yet are not
charged: they end FAILED with BATCH_STOPPED.
"""

from __future__ import annotations

import asyncio

import structlog

from paygrid_server.domain.model import limits
from paygrid_server.domain.model.batch import BatchGroup, BatchItem, BatchItemStatus
from paygrid_server.domain.charging.settlement import ChargeSettlement, Reversal
from paygrid_server.domain.model.payment import Failure, FailureReason
from paygrid_server.domain.ports.group_queue import GroupQueue

log = structlog.get_logger("paygrid.batches")


def first_failure(items: list[BatchItem]) -> BatchItem | None:
    for item in items:
        if item.status in (BatchItemStatus.FAILED, BatchItemStatus.UNKNOWN):
            return item
    return None


def stop(item: BatchItem, cause: str) -> None:
    item.status = BatchItemStatus.FAILED
    item.failure = Failure(FailureReason.BATCH_STOPPED,
                           f"not charged: the batch stopped after {cause}")


class GroupReversal:
    def __init__(self, settlement: ChargeSettlement, batch_uid: str) -> None:
        self._settlement = settlement
        self._batch_uid = batch_uid

    async def keep_whole(self, group: BatchGroup) -> None:
        """After the group's charges: if one failed, reverse the rest."""
        await self.keep_items_whole(group.items, group.group_no)

    async def keep_items_whole(self, items: list[BatchItem], group_no: int) -> None:
        """keep_whole for a group's items given as a list."""
        failed = first_failure(items)
        if failed is None:
            return
        cause = f"item {failed.reference!r} of group {group_no} failed"
        holding = [i for i in items
                   if i.status in (BatchItemStatus.SUCCEEDED, BatchItemStatus.UNKNOWN)]
        log.info("batch.group_reversal", group_no=group_no, cause=failed.reference,
                 items=len(holding))
        outcomes = await self._reverse_all(holding)
        for item, outcome in zip(holding, outcomes):
            self._settle(item, outcome, "it was unknown" if item is failed else cause)

    async def finish_pending(self, items: list[BatchItem]) -> None:
        """Items left REVERSAL_PENDING: reverse them now."""
        outcomes = await self._reverse_all(items)
        for item, outcome in zip(items, outcomes):
            self._settle(item, outcome, "its group failed")

    async def restart(self, items: list[BatchItem]) -> None:
        """Items of an interrupted group that cannot stand as it is (the
        channel fenced one of its keys): reversed, then back to RECEIVED
        (new attempt key) to be charged again in a new group."""
        outcomes = await self._reverse_all(items)
        for item, outcome in zip(items, outcomes):
            if outcome is Reversal.NOT_DONE:
                self._settle(item, outcome, "its group was interrupted")
            else:
                item.status, item.attempt, item.group_no = (
                    BatchItemStatus.RECEIVED, item.attempt + 1, 0)
                item.failure, item.channel_reference = None, ""

    async def _reverse_all(self, items: list[BatchItem]) -> list[Reversal]:
        gate = asyncio.Semaphore(limits.BATCH_ITEM_CONCURRENCY_PER_GROUP)

        async def reverse(item: BatchItem) -> Reversal:
            async with gate:
                return await self._settlement.reverse(
                    item.channel, item.channel_key(self._batch_uid), item.amount)

        return list(await asyncio.gather(*(reverse(item) for item in items)))

    @staticmethod
    def _settle(item: BatchItem, outcome: Reversal, cause: str) -> None:
        if outcome is Reversal.REVERSED:
            item.status = BatchItemStatus.FAILED
            item.failure = Failure(FailureReason.OTHER_ITEM_FAILED,
                                   f"charged, then reversed because {cause}")
        elif outcome is Reversal.NOTHING_CHARGED:
            item.status = BatchItemStatus.FAILED
            item.failure = Failure(FailureReason.OTHER_ITEM_FAILED,
                                   f"not charged (voided) because {cause}")
        else:
            item.status = BatchItemStatus.UNKNOWN
            item.failure = Failure(FailureReason.REVERSAL_PENDING,
                                   f"to be reversed because {cause}; the channel could not "
                                   "confirm it yet: resubmit the batch to finish")


class BatchStop:
    """STOP_ON_FIRST_FAILURE, for one submission: what stopped the batch,
    once something did; the group queue is told once, so workers skip the
    batch's groups not charged yet."""

    def __init__(self, queue: GroupQueue, batch_uid: str) -> None:
        self._queue = queue
        self._batch_uid = batch_uid
        self.cause: str | None = None

    def note(self, cause: str) -> bool:
        """Records the first cause; False when the batch was stopped already."""
        if self.cause is not None:
            return False
        self.cause = cause
        log.warning("batch.stopped", cause=cause)
        return True

    async def stop(self, cause: str) -> None:
        if self.note(cause):
            await self._queue.stop_batch(self._batch_uid, cause)
