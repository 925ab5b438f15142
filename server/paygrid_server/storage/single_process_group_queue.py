"""The group queue of a lone server on SQLite (one process holds the file).

No other process opens the database file while a lone server holds it
(workers sharing a file lease groups in it: storage/sqlite/group_queue.py),
so durable leases would buy nothing and cost writes on SQLite's single
writer (queueing, claiming and fencing a group are three more per group):
groups wait here, in memory, and a group's items are written twice, as
before leases existed - PROCESSING (with the group row) before the charge,
the results (group done) after.

Marked ahead: when a group's results are stored and its batch may go on
(`next_may_start`: not a STOP_ON_FIRST_FAILURE batch, which may stop at
any group), the batch's next queued group is marked PROCESSING in the
same transaction, where the store can (LoneServerGroupQueue passes
SqliteBatchStore.save_group_results_then_mark). That
group is claimed as soon as a slot frees, often the one just freed; its
own mark then writes nothing (its items were stored PROCESSING before its
charge all the same). Its processing time is still counted from its
claim (the results store the group's started_at_us again). Why: a
group of a batch otherwise waits for two commits of the one writer, each
behind the round in progress (often a 500-item insert); one of them is
gone (100k items, 500 a message: APT 11.5-12.5 ms instead of 18.0-20.2,
items/s +8% (median of 4 pairs), docs/performance.md "Session 11"). A
marked-ahead group that a stream's end drops unclaimed is
left as a crash leaves a group mid-charge: its items PROCESSING, settled
with their channel by the batch's resubmission.

A group claimed here cannot be lost to another process, so its lease is
never taken over and never fenced. After a crash nothing of this queue is
left: the items of unfinished groups are RECEIVED (never charged) or
PROCESSING (maybe charged); a resubmission of the batch settles the latter
with their channel and groups the rest again (domain/batches/resume.py, `durable`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Awaitable, Callable

from paygrid_server.domain.model import clock
from paygrid_server.domain.model.batch import BatchGroup, BatchItem
from paygrid_server.domain.ports.batch_store import BatchStore
from paygrid_server.domain.ports.group_queue import DoneGroup, GroupLease

# A done group's results and the next group's mark, written in one
# transaction: (batch_uid, done, then) -> None.
SaveResultsThenMark = Callable[[str, BatchGroup, BatchGroup], Awaitable[None]]

# How often release_submission looks whether a batch's groups still
# charging here are done (only after a group failed; normally none are).
_DRAIN_POLL_S = 0.01


class SingleProcessGroupQueue:
    durable = False

    def __init__(self, store: BatchStore,
                 save_results_then_mark: SaveResultsThenMark | None = None) -> None:
        """Without `save_results_then_mark` (a store that can write both in
        one transaction) no group is marked ahead."""
        self._store = store
        self._save_results_then_mark = save_results_then_mark
        self._queued: dict[str, deque[BatchGroup]] = {}  # by batch uid, in group order
        self._leased: dict[str, dict[int, BatchGroup]] = {}
        self._parallelism: dict[str, int] = {}
        self._stopped: dict[str, str] = {}
        self._marked: set[tuple[str, int]] = set()  # groups whose row is stored
        # Groups marked ahead, until their own mark_group_processing: the
        # write they ride on: True once committed, False if it failed (the
        # group then marks itself).
        self._ahead: dict[tuple[str, int], asyncio.Future[bool]] = {}

    async def queue_group(self, batch_uid: str, group: BatchGroup, parallelism: int) -> None:
        for item in group.items:
            item.group_no = group.group_no  # in memory; stored with PROCESSING
        self._parallelism[batch_uid] = parallelism
        self._queued.setdefault(batch_uid, deque()).append(group)

    async def claim_group(self, owner: str, lease_ms: int) -> GroupLease | None:
        for batch_uid, groups in self._queued.items():
            leased = self._leased.setdefault(batch_uid, {})
            if groups and len(leased) < self._parallelism[batch_uid]:
                group = groups.popleft()
                leased[group.group_no] = group
                return GroupLease(batch_uid, group.group_no, group.key, owner, 1,
                                  self._stopped.get(batch_uid))
        return None

    async def renew_group_lease(self, lease: GroupLease, lease_ms: int) -> bool:
        return True  # no other process can claim it

    async def release_group_lease(self, lease: GroupLease) -> None:
        self._done(lease.batch_uid, lease.group_no)

    def abandon_group_lease(self, lease: GroupLease) -> None:
        self._done(lease.batch_uid, lease.group_no)

    async def group_items(self, batch_uid: str, group_no: int) -> list[BatchItem]:
        return self._leased[batch_uid][group_no].items

    async def mark_group_processing(self, batch_uid: str, group: BatchGroup,
                                    lease: GroupLease | None = None) -> bool:
        ahead = self._ahead.pop((batch_uid, group.group_no), None)
        if ahead is not None:
            # Shielded: this caller's cancellation must not cancel the
            # answer the writing group's caller sets.
            if await asyncio.shield(ahead):
                return True
        await self._store.mark_group_processing(batch_uid, group)
        self._marked.add((batch_uid, group.group_no))
        return True

    async def save_group_results(self, batch_uid: str, group: BatchGroup,
                                 lease: GroupLease | None = None,
                                 stops_batch: str | None = None,
                                 next_may_start: bool = False) -> bool:
        if (batch_uid, group.group_no) not in self._marked:
            # A skipped group (the batch stopped): its row is stored too,
            # so its number stays taken, as a charged group's does.
            await self._store.mark_group_processing(batch_uid, group)
            await self._store.save_items(batch_uid, group.items)
        else:
            going_on = next_may_start and stops_batch is None and batch_uid not in self._stopped
            then = self._next_to_mark(batch_uid) if going_on else None
            if then is None:
                await self._store.save_group_results(batch_uid, group)
            else:
                await self._save_and_mark_ahead(batch_uid, group, then)
        if stops_batch is not None:
            self._stopped.setdefault(batch_uid, stops_batch)
        self._done(batch_uid, group.group_no)
        return True

    async def save_items(self, batch_uid: str, items: list[BatchItem],
                         lease: GroupLease | None = None) -> bool:
        await self._store.save_items(batch_uid, items)
        return True

    def _next_to_mark(self, batch_uid: str) -> BatchGroup | None:
        """The batch's first queued group not marked (or being marked) yet."""
        if self._save_results_then_mark is None:
            return None
        for queued in self._queued.get(batch_uid, ()):
            key = (batch_uid, queued.group_no)
            if key not in self._marked and key not in self._ahead:
                return queued
        return None

    async def _save_and_mark_ahead(self, batch_uid: str, done: BatchGroup,
                                   then: BatchGroup) -> None:
        key = (batch_uid, then.group_no)
        stored = asyncio.get_running_loop().create_future()
        self._ahead[key] = stored  # from now on its own mark waits for this write
        then.started_at_us = clock.now_us()  # until its results store when it really started
        assert self._save_results_then_mark is not None  # _next_to_mark said so
        try:
            await self._save_results_then_mark(batch_uid, done, then)
        except BaseException:
            stored.set_result(False)  # rolled back: it marks itself when it starts
            self._ahead.pop(key, None)
            raise
        self._marked.add(key)
        stored.set_result(True)

    def _done(self, batch_uid: str, group_no: int) -> None:
        self._leased.get(batch_uid, {}).pop(group_no, None)
        self._marked.discard((batch_uid, group_no))
        self._ahead.pop((batch_uid, group_no), None)

    async def unfinished_groups(self, batch_uid: str) -> list[int]:
        return []  # none outlives the run that queued it (release_submission)

    async def done_groups(self, batch_uid: str, group_nos: list[int]) -> list[DoneGroup]:
        return []  # every group is done here and told to its run at once

    async def stop_batch(self, batch_uid: str, cause: str) -> None:
        self._stopped.setdefault(batch_uid, cause)

    async def acquire_submission(self, batch_uid: str, owner: str, lease_ms: int) -> bool:
        return True  # one process: its in-flight check is the whole guard

    async def renew_submission(self, batch_uid: str, owner: str, lease_ms: int) -> bool:
        return True

    async def release_submission(self, batch_uid: str, owner: str) -> None:
        # Groups not claimed yet are dropped (their items stay RECEIVED and
        # ungrouped in the database); groups charging finish first, so a
        # resubmission never settles an item a worker is still charging.
        self._queued.pop(batch_uid, None)
        while self._leased.get(batch_uid):
            await asyncio.sleep(_DRAIN_POLL_S)
        self._leased.pop(batch_uid, None)
        # Groups dropped here after they were marked ahead: stored as a
        # crash leaves a group mid-charge (module docstring).
        for key in [k for k in (*self._marked, *self._ahead) if k[0] == batch_uid]:
            self._marked.discard(key)
            self._ahead.pop(key, None)
        self._parallelism.pop(batch_uid, None)
        self._stopped.pop(batch_uid, None)

    async def watch_groups(self, changed: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        async def nothing() -> None:
            pass

        return nothing  # groups are queued and done in this process: it wakes itself

    async def interrupt_abandoned(self) -> int:
        return 0  # start-up's BatchStore.interrupt_abandoned covers a crash

    async def expire_leases_of(self, owner: str) -> int:
        return 0  # only this process ever holds this queue's groups
