"""One submission of a batch, from header to summary.

    client messages -> inbox (bounded) -> ingest: validate, store, group
      -> sealed groups queued (at most 2 x parallelism unfinished; stored
         QUEUED on PostgreSQL, in memory on SQLite: ports/group_queue.py)
      -> group workers of any replica claim and charge them
         (batch_group_workers.py) -> each group done, wherever -> outbox

Every stage is bounded, so a fast client is slowed by gRPC flow control and
memory stays flat whatever the batch size. The run is not the RPC: when the
stream drops, groups already formed still finish and are stored; items not
yet in a group wait, stored, for the batch to be resubmitted. Groups done
here are told at once; ones done by other replicas are found by polling.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Mapping

import structlog

from paygrid_server.domain import clock, limits
from paygrid_server.domain.batch import (
    Batch,
    BatchGroup,
    BatchHeader,
    BatchItem,
    BatchItemStatus,
    BatchStatus,
    FailurePolicy,
    ItemResult,
)
from paygrid_server.domain.batch_control_totals import ControlTally, ControlTotals
from paygrid_server.domain.batch_failure_policy import GroupReversal, first_failure
from paygrid_server.domain.batch_recharge import settle_interrupted, settle_interrupted_group
from paygrid_server.domain.batch_group_workers import BatchLeaseLimits, GroupWorkers
from paygrid_server.domain.batch_events import (
    BatchSummary,
    GroupCompleted,
    ItemsAlreadyProcessed,
    ItemsRejected,
    Outbox,
)
from paygrid_server.domain.batch_grouping import Grouper
from paygrid_server.domain.batch_timing import batch_timing
from paygrid_server.domain.batch_validation import TransactionInput, validate_transaction
from paygrid_server.domain.charge_settlement import ChargeSettlement
from paygrid_server.domain.errors import DomainError, PreconditionFailed
from paygrid_server.domain.payment import Failure, FailureReason, LegRequest
from paygrid_server.domain.routing import Router
from paygrid_server.ports.batch_store import BatchStore
from paygrid_server.ports.payment_channel import PaymentChannel

log = structlog.get_logger("paygrid.batches")

_END = object()  # the client finished sending
_ABORT = object()  # the stream is gone


class BatchRun:
    def __init__(self, batch: Batch, header: BatchHeader, store: BatchStore, router: Router,
                 channels: Mapping[str, PaymentChannel], settlement: ChargeSettlement,
                 workers: GroupWorkers, lease: BatchLeaseLimits) -> None:
        self.batch = batch
        self._header = header  # this submission's (group size and parallelism may change)
        self._store = store
        self._router = router
        self._channels = channels
        self._settlement = settlement
        self._workers = workers
        self._groups_queue = workers.queue
        self._lease = lease
        self._inbox: asyncio.Queue = asyncio.Queue(limits.BATCH_INBOX_MESSAGES)
        # Groups this run tells (queued by it, or left unfinished by an
        # earlier submission), and those of them not done yet.
        self._told_by_group: set[int] = set()
        self._unfinished: set[int] = set()
        self._backlog_groups = 2 * header.parallelism
        self._done_here: list[BatchGroup] = []
        self._progress = asyncio.Event()  # a group was done here, or ingest ended
        self._room = asyncio.Event()  # the backlog of unfinished groups shrank
        self._ingest_over = False
        self.outbox = Outbox(2 * header.parallelism + 2)
        self._group_processing_us: list[int] = []
        self._items_final = 0
        self._worker_error: BaseException | None = None
        self._ended = False
        self._aborted = False
        # Why the stream must end with an error, for the transport to report.
        self.refusal: DomainError | None = None
        self.failure: BaseException | None = None
        # With control totals declared, items are stored but not grouped (so
        # not charged) until the stream has ended and its totals match.
        self._tally = ControlTally()
        self._holding = header.control is not None
        self._end_control: ControlTotals | None = None
        self._rejected = False
        self._policy = header.failure_policy
        self._reversal = GroupReversal(settlement, batch.uid)
        # STOP_ON_FIRST_FAILURE: what stopped the batch, once something did.
        self._stopped_after: str | None = None

    # -- the submitter's side (transport) ----------------------------------

    async def submit(self, transactions: list[TransactionInput]) -> None:
        """Hands over one message's transactions; waits while the batch is busy."""
        # Counted whether or not the header declared totals: a BatchEnd may.
        for tx in transactions:
            self._tally.add(tx.amount)
        await self._inbox.put(transactions)

    async def end(self, declared: ControlTotals | None = None) -> None:
        """The client sent everything; `declared`: control totals its end
        message carries, checked with the header's."""
        self._end_control = declared
        await self._inbox.put(_END)

    def refuse(self, error: DomainError) -> None:
        """The client broke the protocol: stop taking items; the stream ends
        with `error`. Items already taken are kept for a resubmission."""
        self.refusal = error
        self.abort()
        self.outbox.detach()

    def abort(self) -> None:
        """The stream is gone: stop taking items; groups already formed
        finish, items not yet in a group stay stored for a resubmission."""
        self._aborted = True
        while not self._inbox.empty():
            self._inbox.get_nowait()
        self._inbox.put_nowait(_ABORT)

    # -- the run ----------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except BaseException as error:
            self.failure = error
            raise
        finally:
            try:
                await self._groups_queue.release_submission(self.batch.uid, self._workers.owner)
            except Exception:  # noqa: BLE001 - it expires after lease_ms anyway
                log.warning("batch.submission_release_failed", exc_info=True)
            await self.outbox.close()  # the submitter always learns the stream is over

    # -- what the group workers tell (GroupListener) --------------------------

    def group_done(self, group: BatchGroup) -> None:
        self._done_here.append(group)
        self._progress.set()

    def groups_changed(self) -> None:
        if self._unfinished:
            self._progress.set()  # look for groups done elsewhere now

    def group_failed(self, group_no: int, error: BaseException) -> None:
        if group_no in self._unfinished and self._worker_error is None:
            self._worker_error = error
            self._progress.set()
            self._room.set()

    async def _run(self) -> None:
        structlog.contextvars.bind_contextvars(tenant_id=self.batch.tenant_id,
                                               batch_id=self.batch.batch_id)
        # The stream's context (its trace span, its log fields): this
        # replica's workers charge the run's groups under it.
        self.context = contextvars.copy_context()
        started_us = clock.now_us()
        submission, next_seq, next_group_no = await self._store.start_submission(
            self.batch.uid, self._header, started_us)
        self._submission = submission
        self._next_seq = next_seq
        counts = await self._store.counts(self.batch.uid)
        self._stored_items = counts.total
        if self._policy is FailurePolicy.STOP_ON_FIRST_FAILURE and (counts.failed
                                                                    or counts.rejected):
            self._stopping("an item failed in an earlier submission")
        self._grouper = Grouper(self.batch.header.grouping, self._header.max_group_size,
                                next_group_no)
        self._first_group_no = next_group_no
        log.info("batch.submission_started", submission=submission,
                 parallelism=self._header.parallelism,
                 max_group_size=self._header.max_group_size)
        if self._stopped_after is not None:
            await self._groups_queue.stop_batch(self.batch.uid, self._stopped_after)
        self._unfinished = set(await self._groups_queue.unfinished_groups(self.batch.uid))
        self._told_by_group = set(self._unfinished)
        self._workers.listen(self.batch.uid, self)
        reporting = asyncio.create_task(self._report())
        # Only a durable queue's submission lease expires (in memory: none).
        renewing = (asyncio.create_task(self._renew_submission())
                    if self._groups_queue.durable else None)
        try:
            await self._settle_interrupted_items()
            if not self._holding:
                await self._regroup_waiting_items()
            self._ended = await self._ingest()
            if self._ended and (self._holding or self._end_control is not None):
                await self._check_control_totals()
            if self._ended:
                await self._store.set_status(self.batch.uid, BatchStatus.PROCESSING)
                for group in self._grouper.seal_all():
                    await self._queue(group)
            self._ingest_over = True
            self._progress.set()
            await reporting
        finally:
            reporting.cancel()
            if renewing is not None:
                renewing.cancel()
            self._workers.unlisten(self.batch.uid, self)
        await self._finish(started_us)

    async def _renew_submission(self) -> None:
        while True:
            await asyncio.sleep(self._lease.renew_every_ms / 1_000)
            try:
                if not await self._groups_queue.renew_submission(
                        self.batch.uid, self._workers.owner, self._lease.lease_ms):
                    log.warning("batch.submission_lease_lost")
            except Exception:  # noqa: BLE001 - tried again at the next renewal
                log.warning("batch.submission_renewal_failed", exc_info=True)

    async def _check_control_totals(self) -> None:
        """Checks the declared totals (the header's, the end message's) and
        ends a hold: the stream's items are grouped when they match;
        otherwise the stream is refused and, if no group of the batch was
        ever formed (so no money moved), the whole batch is rejected."""
        mismatches = []
        for declared in (self._header.control, self._end_control):
            if declared is not None:
                mismatches += [m for m in self._tally.mismatches(declared) if m not in mismatches]
        if not mismatches:
            log.info("batch.control_totals_matched", items=self._tally.item_count)
            if self._holding:
                self._holding = False
                await self._regroup_waiting_items()
            return
        message = "; ".join(mismatches)
        # Without totals in the header nothing was held: groups may be charged.
        self._rejected = self._first_group_no == 1 and not self._told_by_group
        if self._rejected:
            await self._store.reject_waiting_items(self.batch.uid, Failure(
                FailureReason.CONTROL_TOTALS_MISMATCH, f"batch rejected: {message}"))
        log.warning("batch.control_totals_mismatch", detail=message,
                    batch_rejected=self._rejected)
        self._ended = False
        subject = "end" if self._header.control is None else "header"
        self.refusal = PreconditionFailed(
            subject, "CONTROL_TOTALS_MISMATCH",
            f"control totals do not match: {message}; " + (
                "nothing was charged and the batch is rejected: send the corrected batch "
                "with a new batch_id" if self._rejected else
                "groups of this batch were charged before, so it stays as it is: "
                "resubmit it with all of its transactions"))

    async def _finish(self, started_us: int) -> None:
        counts = await self._store.counts(self.batch.uid)
        complete = self._ended and counts.pending == 0 and self._worker_error is None
        status = BatchStatus.COMPLETED if complete else BatchStatus.INTERRUPTED
        if self._rejected:
            status = BatchStatus.REJECTED
        finished_us = clock.now_us()
        wall_us = finished_us - started_us
        await self._store.finish_submission(self.batch.uid, status, wall_us,
                                            finished_us if complete else None)
        timing = batch_timing(self._group_processing_us, self._items_final, wall_us)
        log.info("batch.submission_finished", submission=self._submission, status=status.value,
                 total=counts.total, succeeded=counts.succeeded, failed=counts.failed,
                 rejected=counts.rejected, pending=counts.pending, groups=timing.groups,
                 wall_ms=round(wall_us / 1_000, 3), apt_ms=round(timing.apt_us / 1_000, 3),
                 throughput_items_per_s=round(timing.throughput_items_per_s, 1),
                 model_throughput_items_per_s=round(timing.model_throughput_items_per_s, 1))
        if self._worker_error is not None:
            raise self._worker_error
        if self._ended:
            await self.outbox.emit(BatchSummary(self.batch.batch_id, status, counts, timing))

    # -- resuming an earlier submission -------------------------------------

    async def _settle_interrupted_items(self) -> None:
        """Items an earlier submission left with an unknown outcome are
        settled with their channel (batch_recharge.py): a charge it made is
        adopted, one it never made is made now under the same key; a key it
        fenced is charged again later, in a new group, under a new attempt
        key. Pending reversals (ALL_OR_NOTHING_PER_GROUP) are finished.
        Items left mid-charge (PROCESSING): with durable groups (PostgreSQL)
        an unfinished group's items are not touched here, whoever claims
        that group next settles them (batch_group_workers.py); with groups
        in memory (SQLite, one process) no group outlives its server, so
        they are settled here too, ALL_OR_NOTHING_PER_GROUP ones group by
        group once every page was read (a group's items span pages)."""
        durable = self._groups_queue.durable
        unsettled = ((BatchItemStatus.UNKNOWN,) if durable else
                     (BatchItemStatus.PROCESSING, BatchItemStatus.UNKNOWN))
        whole_groups = (not durable
                        and self._policy is FailurePolicy.ALL_OR_NOTHING_PER_GROUP)
        interrupted_groups: dict[int, list[BatchItem]] = {}
        after = 0
        while items := await self._store.items_after(self.batch.uid, after,
                                                     limits.BATCH_PAGE_ITEMS, unsettled):
            after = items[-1].seq
            # An unfinished group's items are its claimant's to settle.
            items = [i for i in items if i.group_no not in self._unfinished]
            if whole_groups:
                for item in items:
                    if item.status is BatchItemStatus.PROCESSING:
                        interrupted_groups.setdefault(item.group_no, []).append(item)
                items = [i for i in items if i.status is not BatchItemStatus.PROCESSING]
            if not items:
                continue
            pending = [i for i in items if i.failure is not None
                       and i.failure.reason is FailureReason.REVERSAL_PENDING]
            others = [i for i in items if not (i.failure is not None and i.failure.reason
                                               is FailureReason.REVERSAL_PENDING)]
            fenced, _ = await asyncio.gather(
                settle_interrupted(self._settlement, self.batch, others),
                self._reversal.finish_pending(pending))
            for item in fenced:
                item.group_no = 0  # charged again in a new group
            await self._save_settled(items)
        for group_items in interrupted_groups.values():
            await settle_interrupted_group(self._settlement, self.batch, group_items)
            await self._save_settled(group_items)

    async def _save_settled(self, items: list[BatchItem]) -> None:
        await self._store.save_items(self.batch.uid, items)
        failed = first_failure(items)
        if failed is not None and self._policy is FailurePolicy.STOP_ON_FIRST_FAILURE:
            await self._stop(f"item {failed.reference!r} failed")

    async def _regroup_waiting_items(self) -> None:
        after = 0
        while items := await self._store.items_after(self.batch.uid, after,
                                                     limits.BATCH_PAGE_ITEMS,
                                                     (BatchItemStatus.RECEIVED,)):
            after = items[-1].seq
            if self._aborted:
                return
            for item in items:
                if item.group_no == 0:  # not queued in a group already
                    await self._group(item)

    # -- taking items in ----------------------------------------------------

    async def _ingest(self) -> bool:
        """True when the client finished sending, False when the stream broke."""
        buffer: list[TransactionInput] = []
        while True:
            try:
                message = await asyncio.wait_for(
                    self._inbox.get(), limits.BATCH_FLUSH_IDLE_MS / 1_000 if buffer else None)
            except TimeoutError:
                await self._store_items(buffer)
                buffer = []
                continue
            if message is _END or message is _ABORT:
                await self._store_items(buffer)
                return message is _END
            buffer.extend(message)
            if len(buffer) >= limits.BATCH_FLUSH_ITEMS:
                await self._store_items(buffer)
                buffer = []

    async def _store_items(self, transactions: list[TransactionInput]) -> None:
        if not transactions:
            return
        items: list[BatchItem] = []
        refused: list[ItemResult] = []
        for tx in transactions:
            if self._stored_items + len(items) >= limits.BATCH_MAX_ITEMS:
                refused.append(ItemResult(tx.reference, BatchItemStatus.REJECTED, failure=Failure(
                    FailureReason.BATCH_LIMIT,
                    f"a batch holds at most {limits.BATCH_MAX_ITEMS} items")))
                continue
            checked = validate_transaction(tx, self._next_seq, self._router.check, self._route)
            if isinstance(checked, ItemResult):
                refused.append(checked)
                continue
            self._next_seq += 1
            items.append(checked)
        outcome = await self._store.insert_items(self.batch.uid, self._submission, items,
                                                 len(refused))
        self._stored_items += len(outcome.new)
        rejected = refused + outcome.refused + [
            i.result() for i in outcome.new if i.status is BatchItemStatus.REJECTED]
        if rejected and self._policy is FailurePolicy.STOP_ON_FIRST_FAILURE:
            await self._stop(f"item {rejected[0].reference!r} was rejected")
        if rejected:
            await self.outbox.emit(ItemsRejected(rejected))
        # A resent item final before this submission gets its stored result;
        # one finished (or to finish) in a group this run tells is told there.
        earlier = [i.result() for i in outcome.resent if i.status.is_final
                   and i.group_no not in self._told_by_group]
        if earlier:
            await self.outbox.emit(ItemsAlreadyProcessed(earlier))
        for item in outcome.new:
            if item.status is BatchItemStatus.RECEIVED:
                await self._group(item)

    def _route(self, item: BatchItem) -> str:
        leg = LegRequest(item.payee, item.amount, item.requested_channel, item.reference)
        return self._router.candidates(leg)[0].name

    async def _group(self, item: BatchItem) -> None:
        if self._aborted or self._holding:
            return  # stays RECEIVED: grouped after the totals check or on resubmission
        for group in self._grouper.add(item):
            await self._queue(group)

    async def _queue(self, group: BatchGroup) -> None:
        """Stores a sealed group for any replica's workers to claim, once the
        batch has fewer than 2 x parallelism groups unfinished (so a fast
        client waits, as the channel does)."""
        while len(self._unfinished) >= self._backlog_groups and self._worker_error is None:
            self._room.clear()
            await self._room.wait()
        if self._worker_error is not None:
            return  # its items stay RECEIVED, grouped again on resubmission
        await self._groups_queue.queue_group(self.batch.uid, group, self._header.parallelism)
        self._told_by_group.add(group.group_no)
        self._unfinished.add(group.group_no)
        self._workers.wake()

    def _stopping(self, cause: str) -> bool:
        if self._stopped_after is not None:
            return False
        self._stopped_after = cause
        log.warning("batch.stopped", cause=cause)
        return True

    async def _stop(self, cause: str) -> None:
        if self._stopping(cause):
            await self._groups_queue.stop_batch(self.batch.uid, cause)

    # -- telling groups done, by whichever replica -----------------------------

    async def _report(self) -> None:
        """Tells each group of the batch as it is done, here (told at once)
        or by another replica (found every progress_poll_ms), until ingest is
        over and no group is left."""
        try:
            await self._report_until_done()
        except Exception as error:  # noqa: BLE001 - ends the run as a worker's failure does
            log.exception("batch.reporting_failed")
            self._worker_error = error
            self._room.set()

    async def _report_until_done(self) -> None:
        poll_s = self._lease.progress_poll_ms / 1_000
        while self._worker_error is None and (self._unfinished or not self._ingest_over):
            self._progress.clear()
            while self._done_here:
                await self._tell(self._done_here.pop(0))
            if self._unfinished:
                for done in await self._groups_queue.done_groups(self.batch.uid,
                                                          sorted(self._unfinished)):
                    if done.group_no not in self._unfinished:
                        continue  # told meanwhile, from here
                    items = await self._groups_queue.group_items(self.batch.uid, done.group_no)
                    await self._tell(BatchGroup(done.group_no, done.group_key, items,
                                                done.started_at_us,
                                                done.completed_at_us or done.started_at_us))
            if self._done_here or self._worker_error is not None:
                continue
            if self._unfinished or not self._ingest_over:
                try:
                    await asyncio.wait_for(self._progress.wait(), poll_s)
                except TimeoutError:
                    pass

    async def _tell(self, group: BatchGroup) -> None:
        if group.group_no not in self._unfinished:
            return
        self._unfinished.discard(group.group_no)
        self._room.set()
        if group.processing_us > 0:  # a skipped group (stopped batch) has none
            self._group_processing_us.append(group.processing_us)
        self._items_final += sum(1 for item in group.items if item.status.is_final)
        await self.outbox.emit(GroupCompleted(group))
