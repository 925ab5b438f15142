"""Resuming a batch: settling what earlier submissions left unsettled,
before this submission takes new items.

Items left with an unknown outcome are settled with their channel
(recharge.py, shared with a replica taking over a group in workers.py): a
charge it made is adopted, one it never made is made now under the same
key; a key it fenced is charged again later, in a new group, under a new
attempt key. Pending reversals (ALL_OR_NOTHING_PER_GROUP) are finished.
Items left mid-charge (PROCESSING): with durable groups (PostgreSQL) an
unfinished group's items are not touched here, whoever claims that group
next settles them (workers.py); with groups in memory (SQLite, one
process) no group outlives its server, so they are settled here too,
ALL_OR_NOTHING_PER_GROUP ones group by group once every page was read (a
group's items span pages).
"""

from __future__ import annotations

import asyncio

from paygrid_server.domain.batches.failure_policy import BatchStop, GroupReversal, first_failure
from paygrid_server.domain.batches.recharge import settle_interrupted, settle_interrupted_group
from paygrid_server.domain.charging.settlement import ChargeSettlement
from paygrid_server.domain.model import limits
from paygrid_server.domain.model.batch import Batch, BatchItem, BatchItemStatus, FailurePolicy
from paygrid_server.domain.model.payment import FailureReason
from paygrid_server.domain.ports.batch_store import BatchStore


class Resume:
    def __init__(self, batch: Batch, policy: FailurePolicy, store: BatchStore,
                 settlement: ChargeSettlement, durable_groups: bool, stop: BatchStop) -> None:
        self._batch = batch
        self._policy = policy  # this submission's
        self._store = store
        self._settlement = settlement
        self._durable_groups = durable_groups
        self._stop = stop
        self._reversal = GroupReversal(settlement, batch.uid)

    async def settle_interrupted_items(self, unfinished_groups: set[int]) -> None:
        """Settles what earlier submissions left, but the items of
        `unfinished_groups` (their claimant's to settle)."""
        unsettled = ((BatchItemStatus.UNKNOWN,) if self._durable_groups else
                     (BatchItemStatus.PROCESSING, BatchItemStatus.UNKNOWN))
        whole_groups = (not self._durable_groups
                        and self._policy is FailurePolicy.ALL_OR_NOTHING_PER_GROUP)
        interrupted_groups: dict[int, list[BatchItem]] = {}
        after = 0
        while items := await self._store.items_after(self._batch.uid, after,
                                                     limits.BATCH_PAGE_ITEMS, unsettled):
            after = items[-1].seq
            items = [i for i in items if i.group_no not in unfinished_groups]
            if whole_groups:
                for item in items:
                    if item.status is BatchItemStatus.PROCESSING:
                        interrupted_groups.setdefault(item.group_no, []).append(item)
                items = [i for i in items if i.status is not BatchItemStatus.PROCESSING]
            if not items:
                continue
            pending = [i for i in items if _reversal_pending(i)]
            others = [i for i in items if not _reversal_pending(i)]
            fenced, _ = await asyncio.gather(
                settle_interrupted(self._settlement, self._batch, others),
                self._reversal.finish_pending(pending))
            for item in fenced:
                item.group_no = 0  # charged again in a new group
            await self._save_settled(items)
        for group_items in interrupted_groups.values():
            await settle_interrupted_group(self._settlement, self._batch, group_items)
            await self._save_settled(group_items)

    async def _save_settled(self, items: list[BatchItem]) -> None:
        await self._store.save_items(self._batch.uid, items)
        failed = first_failure(items)
        if failed is not None and self._policy is FailurePolicy.STOP_ON_FIRST_FAILURE:
            await self._stop.stop(f"item {failed.reference!r} failed")


def _reversal_pending(item: BatchItem) -> bool:
    return item.failure is not None and item.failure.reason is FailureReason.REVERSAL_PENDING
