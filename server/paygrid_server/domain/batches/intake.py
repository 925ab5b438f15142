"""Taking one submission's items in: client messages -> inbox (bounded) ->
validate, store, group -> sealed groups queued for the group workers.

Every stage is bounded, so a fast client is slowed by gRPC flow control and
memory stays flat whatever the batch size. With control totals declared,
items are stored but not grouped (so not charged) until the stream has
ended and its totals match. Where the intake stands is the run's state
(run_state.py); only this module moves it.
"""

from __future__ import annotations

import asyncio
from typing import Callable

import structlog

from paygrid_server.domain.batches.events import ItemsAlreadyProcessed, ItemsRejected, Outbox
from paygrid_server.domain.batches.failure_policy import BatchStop
from paygrid_server.domain.batches.grouping import Grouper
from paygrid_server.domain.batches.progress import GroupProgress
from paygrid_server.domain.batches.run_state import RunState
from paygrid_server.domain.charging.routing import Router
from paygrid_server.domain.model import limits
from paygrid_server.domain.model.batch import (
    Batch,
    BatchGroup,
    BatchHeader,
    BatchItem,
    BatchItemStatus,
    BatchStatus,
    FailurePolicy,
    ItemResult,
)
from paygrid_server.domain.model.transaction_columns import TransactionColumns, validate_columns
from paygrid_server.domain.model.control_totals import ControlTally, ControlTotals
from paygrid_server.domain.model.errors import DomainError, PreconditionFailed
from paygrid_server.domain.model.payment import Failure, FailureReason
from paygrid_server.domain.payments_first import PaymentsFirst
from paygrid_server.domain.ports.batch_store import BatchStore
from paygrid_server.domain.ports.group_queue import GroupQueue

log = structlog.get_logger("paygrid.batches")

_END = object()  # the client finished sending
_ABORT = object()  # the stream is gone


class Intake:
    def __init__(self, batch: Batch, header: BatchHeader, store: BatchStore, router: Router,
                 queue: GroupQueue, wake_workers: Callable[[], None], progress: GroupProgress,
                 outbox: Outbox, stop: BatchStop, payments_first: PaymentsFirst) -> None:
        self._batch = batch
        self._header = header  # this submission's (group size and parallelism may change)
        self._store = store
        self._router = router
        self._queue = queue
        self._wake_workers = wake_workers
        self._progress = progress
        self._outbox = outbox
        self._stop = stop
        self._payments_first = payments_first
        self.state = RunState.HOLDING if header.control is not None else RunState.TAKING
        self._inbox: asyncio.Queue = asyncio.Queue(limits.BATCH_INBOX_MESSAGES)
        # Counted whether or not the header declared totals: a BatchEnd may.
        self._tally = ControlTally()
        self._end_control: ControlTotals | None = None
        # Where this submission starts (set by start(), from the store).
        self._submission = 0
        self._next_seq = 0
        self._stored_items = 0
        self._first_group_no = 0
        self._grouper = Grouper(batch.header.grouping, header.max_group_size, 1)

    def start(self, submission: int, next_seq: int, stored_items: int, next_group_no: int) -> None:
        self._submission = submission
        self._next_seq = next_seq
        self._stored_items = stored_items
        self._first_group_no = next_group_no
        self._grouper = Grouper(self._batch.header.grouping, self._header.max_group_size,
                                next_group_no)

    # -- the submitter's side (transport, through the run) -------------------

    async def submit(self, transactions: TransactionColumns) -> None:
        self._tally.add_columns(transactions)
        await self._inbox.put(transactions)

    async def end(self, declared: ControlTotals | None) -> None:
        self._end_control = declared
        await self._inbox.put(_END)

    def abort(self) -> None:
        if self.state in (RunState.TAKING, RunState.HOLDING, RunState.SEALING):
            self.state = RunState.BREAKING
        while not self._inbox.empty():
            self._inbox.get_nowait()
        self._inbox.put_nowait(_ABORT)

    # -- the intake, from the first item to the last group queued --------------

    async def run(self) -> DomainError | None:
        """Takes items until the stream ends or breaks; returns why the
        stream must end with an error (control totals), if it must."""
        if self.state is not RunState.HOLDING:
            await self.regroup_waiting_items()
        ended = await self._take_items()
        refusal = None
        if ended and (self._header.control is not None or self._end_control is not None):
            refusal = await self._check_control_totals()
            ended = refusal is None
        if ended:
            if self.state is RunState.TAKING:
                self.state = RunState.SEALING
            await self._store.set_status(self._batch.uid, BatchStatus.PROCESSING)
            for group in self._grouper.seal_all():
                await self._queue_group(group)
            self.state = RunState.ENDED
        elif self.state is RunState.BREAKING:
            self.state = RunState.BROKEN
        return refusal

    async def regroup_waiting_items(self) -> None:
        after = 0
        while items := await self._store.items_after(self._batch.uid, after,
                                                     limits.BATCH_PAGE_ITEMS,
                                                     (BatchItemStatus.RECEIVED,)):
            after = items[-1].seq
            if self.state is RunState.BREAKING:
                return
            # Those not queued in a group already.
            await self._group([item for item in items if item.group_no == 0])

    async def _take_items(self) -> bool:
        """True when the client finished sending, False when the stream broke."""
        buffer: list[TransactionColumns] = []
        buffered = 0
        while True:
            try:
                message = await asyncio.wait_for(
                    self._inbox.get(), limits.BATCH_FLUSH_IDLE_MS / 1_000 if buffer else None)
            except TimeoutError:
                await self._store_items(buffer)
                buffer, buffered = [], 0
                continue
            if message is _END or message is _ABORT:
                await self._store_items(buffer)
                return message is _END
            buffer.append(message)
            buffered += len(message)
            if buffered >= limits.BATCH_FLUSH_ITEMS:
                await self._store_items(buffer)
                buffer, buffered = [], 0

    async def _store_items(self, messages: list[TransactionColumns]) -> None:
        if not messages:
            return
        # Before the items' validation and their rows: the dearest step on
        # the loop. Meanwhile the inbox fills and the stream's flow control
        # slows the client.
        await self._payments_first.batch_turn()
        items: list[BatchItem] = []
        refused: list[ItemResult] = []
        for columns in messages:
            valid = validate_columns(columns, self._next_seq,
                                     limits.BATCH_MAX_ITEMS - self._stored_items - len(items),
                                     self._router.check, self._route,
                                     self._router.sole_choice)
            self._next_seq = valid.next_seq
            items += valid.items
            refused += valid.refused
        outcome = await self._store.insert_items(self._batch.uid, self._submission, items,
                                                 len(refused))
        self._stored_items += len(outcome.new)
        rejected = refused + outcome.refused + [
            i.result() for i in outcome.new if i.status is BatchItemStatus.REJECTED]
        if rejected and self._header.failure_policy is FailurePolicy.STOP_ON_FIRST_FAILURE:
            await self._stop.stop(f"item {rejected[0].reference!r} was rejected")
        if rejected:
            await self._outbox.emit(ItemsRejected(rejected))
        # A resent item final before this submission gets its stored result;
        # one finished (or to finish) in a group this run tells is told there.
        earlier = [i.result() for i in outcome.resent if i.status.is_final
                   and i.group_no not in self._progress.told]
        if earlier:
            await self._outbox.emit(ItemsAlreadyProcessed(earlier))
        await self._group([i for i in outcome.new if i.status is BatchItemStatus.RECEIVED])

    def _route(self, item: BatchItem) -> str:
        return self._router.first_choice(item.requested_channel, item.amount)

    async def _group(self, items: list[BatchItem]) -> None:
        """Adds each item to its group; a group sealed is queued. No await
        per item: only a sealed group waits (for room in the backlog), and
        only then may the state have moved on (the stream broke)."""
        if not self.state.groups_items:
            return  # they stay RECEIVED: grouped after the totals check or on resubmission
        add = self._grouper.add
        for item, key in zip(items, self._grouper.keys(items)):
            sealed = add(item, key)
            for group in sealed:
                await self._queue_group(group)
            if sealed and not self.state.groups_items:
                return

    async def _queue_group(self, group: BatchGroup) -> None:
        """Stores a sealed group for any replica's workers to claim, once the
        batch has room in its backlog of unfinished groups."""
        if not await self._progress.room_for_a_group():
            return  # its items stay RECEIVED, grouped again on resubmission
        await self._queue.queue_group(self._batch.uid, group, self._header.parallelism)
        self._progress.queued(group.group_no)
        self._wake_workers()

    async def _check_control_totals(self) -> DomainError | None:
        """Checks the declared totals (the header's, the end message's) and
        ends a hold: the stream's items are grouped when they match;
        otherwise the stream is refused and, if no group of the batch was
        ever formed (so no money moved), the whole batch is rejected."""
        mismatches: list[str] = []
        for declared in (self._header.control, self._end_control):
            if declared is not None:
                mismatches += [m for m in self._tally.mismatches(declared) if m not in mismatches]
        if not mismatches:
            log.info("batch.control_totals_matched", items=self._tally.item_count)
            if self._header.control is not None:
                if self.state is RunState.HOLDING:
                    self.state = RunState.SEALING
                await self.regroup_waiting_items()
            return None
        message = "; ".join(mismatches)
        # Without totals in the header nothing was held: groups may be charged.
        rejected = self._first_group_no == 1 and not self._progress.told
        if rejected:
            await self._store.reject_waiting_items(self._batch.uid, Failure(
                FailureReason.CONTROL_TOTALS_MISMATCH, f"batch rejected: {message}"))
        log.warning("batch.control_totals_mismatch", detail=message, batch_rejected=rejected)
        self.state = RunState.REJECTED if rejected else RunState.REFUSED
        subject = "end" if self._header.control is None else "header"
        return PreconditionFailed(
            subject, "CONTROL_TOTALS_MISMATCH",
            f"control totals do not match: {message}; " + (
                "nothing was charged and the batch is rejected: send the corrected batch "
                "with a new batch_id" if rejected else
                "groups of this batch were charged before, so it stays as it is: "
                "resubmit it with all of its transactions"))
