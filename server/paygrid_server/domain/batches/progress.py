"""Progress of one submission's groups: which of them this run tells, which
are not done yet, and telling each one done (here, at once, or by another
replica, found by polling) to the stream's outbox.

It is the run's GroupListener (workers.py): this replica's workers tell it
a group is done or failed; it also bounds the backlog of unfinished groups
(2 x parallelism), so a fast client waits, as the channel does.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Callable, Iterable

import structlog

from paygrid_server.domain.batches.events import GroupCompleted, Outbox
from paygrid_server.domain.model.batch import BatchGroup, final_counts
from paygrid_server.domain.ports.group_queue import GroupQueue

log = structlog.get_logger("paygrid.batches")


class GroupProgress:
    def __init__(self, batch_uid: str, queue: GroupQueue, outbox: Outbox, backlog_groups: int,
                 poll_ms: int) -> None:
        self._batch_uid = batch_uid
        self._queue = queue
        self._outbox = outbox
        self._backlog_groups = backlog_groups
        self._poll_s = poll_ms / 1_000
        # Groups this run tells (queued by it, or left unfinished by an
        # earlier submission), and those of them not done yet.
        self.told: set[int] = set()
        self.unfinished: set[int] = set()
        self._done_here: list[BatchGroup] = []
        self._progress = asyncio.Event()  # a group was done here, or intake moved on
        self._room = asyncio.Event()  # the backlog of unfinished groups shrank
        self.group_processing_us: list[int] = []
        self.items_final = 0
        self.worker_error: BaseException | None = None
        # The stream's context (its trace span, its log fields): this
        # replica's workers charge the run's groups under it. Taken again
        # once the run has bound its log fields.
        self.context: contextvars.Context = contextvars.copy_context()

    def adopt(self, unfinished: Iterable[int]) -> None:
        """Groups an earlier submission left unfinished: told by this run too."""
        self.unfinished = set(unfinished)
        self.told = set(self.unfinished)

    # -- what the group workers tell (GroupListener) --------------------------

    def group_done(self, group: BatchGroup) -> None:
        self._done_here.append(group)
        self._progress.set()

    def groups_changed(self) -> None:
        if self.unfinished:
            self._progress.set()  # look for groups done elsewhere now

    def group_failed(self, group_no: int, error: BaseException) -> None:
        if group_no in self.unfinished and self.worker_error is None:
            self.worker_error = error
            self._progress.set()
            self._room.set()

    # -- what the intake tells -----------------------------------------------

    def intake_moved(self) -> None:
        self._progress.set()

    async def room_for_a_group(self) -> bool:
        """Waits until the batch has fewer than the backlog of groups
        unfinished; False when a worker failed (nothing more is queued)."""
        while len(self.unfinished) >= self._backlog_groups and self.worker_error is None:
            self._room.clear()
            await self._room.wait()
        return self.worker_error is None

    def queued(self, group_no: int) -> None:
        self.told.add(group_no)
        self.unfinished.add(group_no)

    # -- telling groups done, by whichever replica -----------------------------

    async def report(self, intake_over: Callable[[], bool]) -> None:
        """Tells each group of the batch as it is done, here (told at once)
        or by another replica (found every poll_ms), until the intake is
        over and no group is left."""
        try:
            await self._report_until_done(intake_over)
        except Exception as error:  # noqa: BLE001 - ends the run as a worker's failure does
            log.exception("batch.reporting_failed")
            self.worker_error = error
            self._room.set()

    async def _report_until_done(self, intake_over: Callable[[], bool]) -> None:
        while self.worker_error is None and (self.unfinished or not intake_over()):
            self._progress.clear()
            while self._done_here:
                await self._tell(self._done_here.pop(0))
            if self.unfinished:
                for done in await self._queue.done_groups(self._batch_uid,
                                                          sorted(self.unfinished)):
                    if done.group_no not in self.unfinished:
                        continue  # told meanwhile, from here
                    items = await self._queue.group_items(self._batch_uid, done.group_no)
                    await self._tell(BatchGroup(done.group_no, done.group_key, items,
                                                done.started_at_us,
                                                done.completed_at_us or done.started_at_us))
            if self._done_here or self.worker_error is not None:
                continue
            if self.unfinished or not intake_over():
                try:
                    await asyncio.wait_for(self._progress.wait(), self._poll_s)
                except TimeoutError:
                    pass

    async def _tell(self, group: BatchGroup) -> None:
        if group.group_no not in self.unfinished:
            return
        self.unfinished.discard(group.group_no)
        self._room.set()
        if group.processing_us > 0:  # a skipped group (stopped batch) has none
            self.group_processing_us.append(group.processing_us)
        self.items_final += sum(final_counts(group.items).values())
        await self._outbox.emit(GroupCompleted(group))
