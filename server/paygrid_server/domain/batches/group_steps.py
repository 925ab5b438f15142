"""The steps of one claimed batch group, in the replica holding its lease:

    [taken over: settle what the earlier holder left mid-charge with the
    channel] -> mark PROCESSING (stored before any charge) -> charge ->
    the batch's failure policy -> store results + DONE, fenced

Every write names the lease: a write the queue refuses (another replica
claimed the group since) raises LeaseLost, and this replica's work on the
group is void. GroupWorkers (workers.py) claims groups, renews their
leases and tells the batch's stream; this file is what it runs for each.
"""

from __future__ import annotations

import structlog

from paygrid_server.domain.model import clock
from paygrid_server.domain.model.batch import (
    Batch,
    BatchGroup,
    BatchItemStatus,
    FailurePolicy,
)
from paygrid_server.domain.batches.failure_policy import GroupReversal, first_failure, stop
from paygrid_server.domain.batches.group_charging import GroupCharger
from paygrid_server.domain.batches.recharge import settle_interrupted
from paygrid_server.domain.charging.charge_path import ChargePath
from paygrid_server.domain.payments_first import PaymentsFirst
from paygrid_server.domain.ports.batch_store import BatchStore
from paygrid_server.domain.ports.group_queue import GroupLease, GroupQueue

log = structlog.get_logger("paygrid.batches")

# Batches whose groups this replica charged, kept to skip a read per group;
# cleared whole when full (a batch's header never changes).
BATCHES_KEPT_MAX = 1_024


class LeaseLost(Exception):
    """Another replica claimed the group: this one's work on it is void."""


class GroupSteps:
    def __init__(self, store: BatchStore, queue: GroupQueue, path: ChargePath,
                 payments_first: PaymentsFirst) -> None:
        self._store = store
        self._payments_first = payments_first
        self._queue = queue
        self._path = path
        self._settlement = path.settlement
        self._batches: dict[str, Batch] = {}
        self._per_item_channels: set[str] = set()

    async def batch(self, batch_uid: str) -> Batch:
        batch = self._batches.get(batch_uid)
        if batch is None:
            batch = await self._store.get_batch_by_uid(batch_uid)
            assert batch is not None, f"group of unknown batch {batch_uid}"
            if len(self._batches) >= BATCHES_KEPT_MAX:
                self._batches.clear()
            self._batches[batch_uid] = batch
        return batch

    async def process(self, lease: GroupLease) -> BatchGroup:
        await self._payments_first.batch_turn()  # before any of the group's work
        batch = await self.batch(lease.batch_uid)
        structlog.contextvars.bind_contextvars(tenant_id=batch.tenant_id,
                                               batch_id=batch.batch_id)
        items = await self._queue.group_items(batch.uid, lease.group_no)
        group = BatchGroup(lease.group_no, lease.group_key, items, started_at_us=clock.now_us())
        charger = GroupCharger(batch, self._path, self._per_item_channels)
        policy = batch.header.failure_policy
        if lease.taken_over:
            await self._settle_left_mid_charge(batch, group, lease)
        if lease.stopped_after is not None:
            return await self._skip(batch, group, lease)
        received, processing = BatchItemStatus.RECEIVED, BatchItemStatus.PROCESSING
        to_charge = [i for i in items if i.status is received]
        for item in to_charge:
            item.status = processing
        # Stored before any charge: whoever takes the group over settles
        # these items with their channel rather than charge them blindly.
        if not await self._queue.mark_group_processing(batch.uid, group, lease):
            raise LeaseLost()
        await charger.charge(to_charge)
        stops_batch = None
        if policy is FailurePolicy.ALL_OR_NOTHING_PER_GROUP:
            await GroupReversal(self._settlement, batch.uid).keep_whole(group)
        elif policy is FailurePolicy.STOP_ON_FIRST_FAILURE:
            failed = first_failure(group.items)
            if failed is not None:
                stops_batch = f"item {failed.reference!r} failed"
                log.warning("batch.stopped", cause=stops_batch)
        group.completed_at_us = clock.now_us()
        # Only a STOP_ON_FIRST_FAILURE batch may stop at any group: any other
        # batch's next group may be marked with these results.
        if not await self._queue.save_group_results(
                batch.uid, group, lease, stops_batch,
                next_may_start=policy is not FailurePolicy.STOP_ON_FIRST_FAILURE):
            raise LeaseLost()
        log.info("batch.group_completed", group_no=group.group_no, group_key=group.key,
                 items=len(group.items), processing_ms=round(group.processing_us / 1_000, 3),
                 taken_over=lease.taken_over)
        return group

    async def _skip(self, batch: Batch, group: BatchGroup, lease: GroupLease) -> BatchGroup:
        """A group of a stopped batch: told as FAILED, never charged; no
        processing time, so APT stays the charged groups' mean."""
        group.started_at_us = group.completed_at_us = 0
        for item in group.items:
            if item.status is BatchItemStatus.RECEIVED:
                stop(item, lease.stopped_after or "")
        if not await self._queue.save_group_results(batch.uid, group, lease):
            raise LeaseLost()
        return group

    async def _settle_left_mid_charge(self, batch: Batch, group: BatchGroup,
                                      lease: GroupLease) -> None:
        """Items the group's earlier holder left PROCESSING may be charged:
        their channel's outcome is adopted, a charge it never made is made
        now under the same key (recharge.py). A fenced one is charged
        again in this group under a new attempt key; no answer leaves it
        UNKNOWN (settled when the batch is resubmitted). The group then
        goes on as any other: ALL_OR_NOTHING_PER_GROUP reverses it only if
        one of its items failed."""
        mid = [i for i in group.items if i.status is BatchItemStatus.PROCESSING]
        if not mid:
            return
        log.info("batch.group_taken_over", group_no=group.group_no, items=len(mid),
                 claims=lease.token)
        await settle_interrupted(self._settlement, batch, mid)
        # The new attempt numbers are stored before any charge under them.
        if not await self._queue.save_items(batch.uid, mid, lease):
            raise LeaseLost()
