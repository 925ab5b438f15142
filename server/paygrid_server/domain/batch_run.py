"""One submission of a batch, from header to summary.

    client messages -> inbox (bounded) -> ingest: validate, store, group
      -> sealed groups (bounded queue) -> `parallelism` workers: charge the
      group's items, store the group's results in one transaction -> outbox

Every stage is bounded, so a fast client is slowed by gRPC flow control and
memory stays flat whatever the batch size. The run is not the RPC: when the
stream drops, groups already formed still finish and are stored; items not
yet in a group wait, stored, for the batch to be resubmitted.
"""

from __future__ import annotations

import asyncio
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
from paygrid_server.domain.batch_control_totals import ControlTally
from paygrid_server.domain.batch_failure_policy import GroupReversal, first_failure, stop
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
from paygrid_server.domain.channel_charge import (
    ChargeOrder,
    NoOutcome,
    call_with_retries,
    charge_and_settle,
    charge_failure,
)
from paygrid_server.domain.charge_settlement import ChargeSettlement
from paygrid_server.domain.circuit_breaker import CircuitBreaker
from paygrid_server.domain.errors import DomainError, PreconditionFailed
from paygrid_server.domain.payment import Failure, FailureReason, LegRequest
from paygrid_server.domain.routing import Router
from paygrid_server.ports.batch_store import BatchStore
from paygrid_server.ports.payment_channel import (
    MAX_CHARGES_PER_BATCH_CALL,
    BulkChargeUnsupported,
    ChargeRecord,
    ChargeStatus,
    PaymentChannel,
)

log = structlog.get_logger("paygrid.batches")

_END = object()  # the client finished sending
_ABORT = object()  # the stream is gone


class BatchRun:
    def __init__(self, batch: Batch, header: BatchHeader, store: BatchStore, router: Router,
                 channels: Mapping[str, PaymentChannel], settlement: ChargeSettlement) -> None:
        self.batch = batch
        self._header = header  # this submission's (group size and parallelism may change)
        self._store = store
        self._router = router
        self._channels = channels
        self._settlement = settlement
        self._inbox: asyncio.Queue = asyncio.Queue(limits.BATCH_INBOX_MESSAGES)
        self._groups: asyncio.Queue = asyncio.Queue(header.parallelism)
        self.outbox = Outbox(2 * header.parallelism + 2)
        self._group_processing_us: list[int] = []
        self._items_final = 0
        self._worker_error: BaseException | None = None
        self._ended = False
        self._aborted = False
        # Why the stream must end with an error, for the transport to report.
        self.refusal: DomainError | None = None
        self.failure: BaseException | None = None
        # Channels that answered ChargeBatch with UNIMPLEMENTED: charged per item.
        self._per_item_channels: set[str] = set()
        # With control totals declared, items are stored but not grouped (so
        # not charged) until the stream has ended and its totals match.
        self._tally = ControlTally()
        self._holding = header.control is not None
        self._rejected = False
        self._policy = header.failure_policy
        self._reversal = GroupReversal(settlement, batch.uid)
        # STOP_ON_FIRST_FAILURE: what stopped the batch, once something did.
        self._stopped_after: str | None = None

    # -- the submitter's side (transport) ----------------------------------

    async def submit(self, transactions: list[TransactionInput]) -> None:
        """Hands over one message's transactions; waits while the batch is busy."""
        if self._holding:  # only declared totals are ever checked
            for tx in transactions:
                self._tally.add(tx.amount)
        await self._inbox.put(transactions)

    async def end(self) -> None:
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
            await self.outbox.close()  # the submitter always learns the stream is over

    async def _run(self) -> None:
        structlog.contextvars.bind_contextvars(tenant_id=self.batch.tenant_id,
                                               batch_id=self.batch.batch_id)
        started_us = clock.now_us()
        submission, next_seq, next_group_no = await self._store.start_submission(
            self.batch.uid, self._header, started_us)
        self._submission = submission
        self._next_seq = next_seq
        counts = await self._store.counts(self.batch.uid)
        self._stored_items = counts.total
        if self._policy is FailurePolicy.STOP_ON_FIRST_FAILURE and (counts.failed
                                                                    or counts.rejected):
            self._stopped_after = "an item failed in an earlier submission"
        self._grouper = Grouper(self.batch.header.grouping, self._header.max_group_size,
                                next_group_no)
        self._first_group_no = next_group_no
        log.info("batch.submission_started", submission=submission,
                 parallelism=self._header.parallelism,
                 max_group_size=self._header.max_group_size)
        workers = [asyncio.create_task(self._work()) for _ in range(self._header.parallelism)]
        try:
            await self._settle_interrupted_items()
            if not self._holding:
                await self._regroup_waiting_items()
            self._ended = await self._ingest()
            if self._ended and self._holding:
                await self._check_control_totals()
            if self._ended:
                await self._store.set_status(self.batch.uid, BatchStatus.PROCESSING)
                for group in self._grouper.seal_all():
                    await self._groups.put(group)
        finally:
            for _ in workers:
                await self._groups.put(None)
            await asyncio.gather(*workers)
        await self._finish(started_us)

    async def _check_control_totals(self) -> None:
        """Ends the hold: the stream's items are grouped when its totals
        match; otherwise the stream is refused and, if no group of the batch
        ever started (so no money moved), the whole batch is rejected."""
        assert self._header.control is not None
        mismatches = self._tally.mismatches(self._header.control)
        if not mismatches:
            self._holding = False
            log.info("batch.control_totals_matched", items=self._tally.item_count)
            await self._regroup_waiting_items()
            return
        message = "; ".join(mismatches)
        self._rejected = self._first_group_no == 1
        if self._rejected:
            await self._store.reject_waiting_items(self.batch.uid, Failure(
                FailureReason.CONTROL_TOTALS_MISMATCH, f"batch rejected: {message}"))
        log.warning("batch.control_totals_mismatch", detail=message,
                    batch_rejected=self._rejected)
        self._ended = False
        self.refusal = PreconditionFailed(
            "header", "CONTROL_TOTALS_MISMATCH",
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
                 throughput_items_per_s=round(timing.throughput_items_per_s, 1))
        if self._worker_error is not None:
            raise self._worker_error
        if self._ended:
            await self.outbox.emit(BatchSummary(self.batch.batch_id, status, counts, timing))

    # -- resuming an earlier submission -------------------------------------

    async def _settle_interrupted_items(self) -> None:
        """Items a stopped server left mid-charge: ask their channel. Charged
        stays charged; a fenced (never charged) one is charged again later
        under a new attempt key. ALL_OR_NOTHING_PER_GROUP: an interrupted
        group is reversed whole and charged again; pending reversals are
        finished."""
        whole_groups = self._policy is FailurePolicy.ALL_OR_NOTHING_PER_GROUP
        after = 0
        unsettled = (BatchItemStatus.PROCESSING, BatchItemStatus.UNKNOWN)
        gate = asyncio.Semaphore(limits.BATCH_ITEM_CONCURRENCY_PER_GROUP)
        while items := await self._store.items_after(self.batch.uid, after,
                                                     limits.BATCH_PAGE_ITEMS, unsettled):
            after = items[-1].seq

            async def settle(item: BatchItem) -> None:
                async with gate:
                    record = await self._settlement.settle(item.channel,
                                                           item.channel_key(self.batch.uid))
                if record is None:
                    item.status = BatchItemStatus.UNKNOWN
                elif record.fenced:
                    item.status, item.attempt, item.group_no = (
                        BatchItemStatus.RECEIVED, item.attempt + 1, 0)
                else:
                    self._apply(item, record)

            pending = [i for i in items if i.failure is not None
                       and i.failure.reason is FailureReason.REVERSAL_PENDING]
            interrupted = [i for i in items
                           if whole_groups and i.status is BatchItemStatus.PROCESSING]
            special = {id(i) for i in pending + interrupted}
            await asyncio.gather(self._reversal.restart(interrupted),
                                 self._reversal.finish_pending(pending),
                                 *(settle(item) for item in items if id(item) not in special))
            await self._store.save_items(self.batch.uid, items)
            failed = first_failure(items)
            if failed is not None and self._policy is FailurePolicy.STOP_ON_FIRST_FAILURE:
                self._stop(f"item {failed.reference!r} failed")

    async def _regroup_waiting_items(self) -> None:
        after = 0
        while items := await self._store.items_after(self.batch.uid, after,
                                                     limits.BATCH_PAGE_ITEMS,
                                                     (BatchItemStatus.RECEIVED,)):
            after = items[-1].seq
            if self._aborted:
                return
            for item in items:
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
            self._stop(f"item {rejected[0].reference!r} was rejected")
        if rejected:
            await self.outbox.emit(ItemsRejected(rejected))
        # A resent item final before this submission gets its stored result;
        # one finished (or to finish) in this submission is told by its group.
        earlier = [i.result() for i in outcome.resent if i.status.is_final
                   and (i.group_no == 0 or i.group_no < self._first_group_no)]
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
            await self._groups.put(group)

    # -- processing groups --------------------------------------------------

    async def _work(self) -> None:
        while (group := await self._groups.get()) is not None:
            if self._worker_error is not None:
                continue  # its items stay stored and are taken up on resubmission
            try:
                if self._stopped_after is not None:
                    await self._skip(group)
                else:
                    await self._process(group)
            except Exception as error:  # noqa: BLE001 - recorded, re-raised by the run
                log.exception("batch.group_failed", group_no=group.group_no)
                self._worker_error = error

    async def _process(self, group: BatchGroup) -> None:
        group.started_at_us = clock.now_us()
        for item in group.items:
            item.status, item.group_no = BatchItemStatus.PROCESSING, group.group_no
        # Stored before any charge: after a crash these items are settled
        # with their channel rather than charged blindly again.
        await self._store.mark_group_processing(self.batch.uid, group)
        # Every grouping policy keys on the channel, so this is one channel;
        # split anyway rather than rely on it.
        by_channel: dict[str, list[BatchItem]] = {}
        for item in group.items:
            by_channel.setdefault(item.channel, []).append(item)
        await asyncio.gather(*(self._charge_on(name, items)
                               for name, items in by_channel.items()))
        if self._policy is FailurePolicy.ALL_OR_NOTHING_PER_GROUP:
            await self._reversal.keep_whole(group)
        elif self._policy is FailurePolicy.STOP_ON_FIRST_FAILURE:
            failed = first_failure(group.items)
            if failed is not None:
                self._stop(f"item {failed.reference!r} failed")
        group.completed_at_us = clock.now_us()
        await self._store.save_group_results(self.batch.uid, group)
        self._group_processing_us.append(group.processing_us)
        self._items_final += sum(1 for item in group.items if item.status.is_final)
        log.info("batch.group_completed", group_no=group.group_no, group_key=group.key,
                 items=len(group.items), processing_ms=round(group.processing_us / 1_000, 3))
        await self.outbox.emit(GroupCompleted(group))

    def _stop(self, cause: str) -> None:
        if self._stopped_after is None:
            self._stopped_after = cause
            log.warning("batch.stopped", cause=cause)

    async def _skip(self, group: BatchGroup) -> None:
        """A group formed after the batch stopped: told as FAILED, never
        charged. Stored like a started group (so its number is taken), but
        with no processing time, so APT stays the charged groups' mean."""
        group.started_at_us = group.completed_at_us = clock.now_us()
        for item in group.items:
            item.group_no = group.group_no
            stop(item, self._stopped_after)
        await self._store.mark_group_processing(self.batch.uid, group)
        await self._store.save_items(self.batch.uid, group.items)
        self._items_final += len(group.items)
        await self.outbox.emit(GroupCompleted(group))

    async def _charge_on(self, name: str, items: list[BatchItem]) -> None:
        """Charges one channel's items of a group: one ChargeBatch call per
        MAX_CHARGES_PER_BATCH_CALL items, or one Charge per item when the
        channel cannot take bulk calls."""
        channel = self._channels[name]
        # An adapter may predate bulk charging altogether.
        if name in self._per_item_channels or getattr(channel, "charge_batch", None) is None:
            await self._charge_each(items)
            return
        breaker = self._router.breaker(name)
        allowed = []
        for item in items:
            # The same per-item gate as _charge: a HALF_OPEN breaker lets one
            # item through as its probe, so the probe is a one-charge call.
            if breaker.allow():
                allowed.append(item)
            else:
                self._fail_circuit_open(item)
        # One call in practice: a group holds at most BATCH_MAX_GROUP_SIZE
        # items, no more than a call takes; the chunking keeps that a choice.
        for start in range(0, len(allowed), MAX_CHARGES_PER_BATCH_CALL):
            await self._charge_in_bulk(channel, allowed[start:start + MAX_CHARGES_PER_BATCH_CALL])

    async def _charge_in_bulk(self, channel: PaymentChannel, items: list[BatchItem]) -> None:
        """One ChargeBatch call for `items` (already let through the breaker),
        with the guarantees of the per-item path: the same keys on every
        try, and an outcome the channel did not confirm settled item by item."""
        breaker = self._router.breaker(channel.name)
        timeout_ms = self._router.route(channel.name).timeout_ms
        deadline_ms = clock.monotonic_ms() + timeout_ms * limits.CHARGE_TRIES_PER_CHANNEL
        orders = [self._order(item) for item in items]
        try:
            outcome = await _charge_batch_with_retries(channel, breaker, orders, timeout_ms,
                                                       deadline_ms)
        except BulkChargeUnsupported:
            # Nothing was charged. These items already hold their breaker
            # pass, so they go straight to one Charge each.
            log.info("batch.bulk_charge_unsupported", channel=channel.name)
            self._per_item_channels.add(channel.name)
            await self._charge_each(items, breaker_passed=True)
            return
        if isinstance(outcome, NoOutcome) and not outcome.maybe_sent:
            for item in items:  # never reached the channel: nothing to settle
                item.status, item.failure = BatchItemStatus.FAILED, outcome.failure
        elif isinstance(outcome, NoOutcome):
            # Timeout, dropped connection or refusal: any of the charges may
            # have been made. Each item goes the per-item way with its same
            # key: Charge again (a made charge is only replayed), and what
            # stays unanswered is settled with GetCharge, then Void.
            log.warning("batch.bulk_charge_unconfirmed", channel=channel.name,
                        items=len(items), error=outcome.failure.message)
            await self._charge_each(items, maybe_charged=True)
        else:
            for item, record in zip(items, outcome):
                self._apply(item, record)

    async def _charge_each(self, items: list[BatchItem], breaker_passed: bool = False,
                           maybe_charged: bool = False) -> None:
        gate = asyncio.Semaphore(limits.BATCH_ITEM_CONCURRENCY_PER_GROUP)

        async def charge(item: BatchItem) -> None:
            async with gate:
                await self._charge(item, breaker_passed, maybe_charged)

        await asyncio.gather(*(charge(item) for item in items))

    async def _charge(self, item: BatchItem, breaker_passed: bool = False,
                      maybe_charged: bool = False) -> None:
        """One Charge for the item. `maybe_charged`: an earlier call with its
        key went unanswered, so it must not be failed without asking."""
        route = self._router.route(item.channel)
        breaker = self._router.breaker(item.channel)
        if not breaker_passed and not breaker.allow():
            if maybe_charged:
                # Not charged again on a failing channel, but only the
                # channel can say whether the earlier call charged it.
                await self._settle(item, _circuit_open(item.channel))
            else:
                self._fail_circuit_open(item)
            return
        deadline_ms = clock.monotonic_ms() + route.timeout_ms * limits.CHARGE_TRIES_PER_CHANNEL
        outcome = await charge_and_settle(self._channels[item.channel], breaker, self._settlement,
                                          self._order(item), route.timeout_ms, deadline_ms)
        if isinstance(outcome, ChargeRecord):
            self._apply(item, outcome)
        elif isinstance(outcome, NoOutcome):
            self._mark_unknown(item, outcome.failure)
        elif maybe_charged:
            # charge_and_settle skips settling when none of its own calls
            # left this process; the earlier call with the key may have.
            await self._settle(item, outcome)
        else:
            item.status, item.failure = BatchItemStatus.FAILED, outcome

    async def _settle(self, item: BatchItem, failure: Failure) -> None:
        """Takes the channel's record for the item's key (GetCharge, else
        Void fences it); `failure` is why it failed when nothing was charged."""
        record = await self._settlement.settle(item.channel, item.channel_key(self.batch.uid))
        if record is None:
            self._mark_unknown(item, failure)
        elif record.status is ChargeStatus.VOIDED:
            item.status, item.failure = BatchItemStatus.FAILED, failure
        else:
            self._apply(item, record)

    def _order(self, item: BatchItem) -> ChargeOrder:
        return ChargeOrder(item.channel_key(self.batch.uid), self.batch.header.payer,
                           item.payee, item.amount, item.reference)

    @staticmethod
    def _fail_circuit_open(item: BatchItem) -> None:
        item.status, item.failure = BatchItemStatus.FAILED, _circuit_open(item.channel)

    @staticmethod
    def _mark_unknown(item: BatchItem, failure: Failure) -> None:
        item.status = BatchItemStatus.UNKNOWN
        item.failure = Failure(FailureReason.OUTCOME_UNKNOWN,
                               f"{failure.message}; settled on resubmission")

    @staticmethod
    def _apply(item: BatchItem, record: ChargeRecord) -> None:
        item.channel_reference = record.charge_id
        item.failure = charge_failure(item.channel, record)
        item.status = BatchItemStatus.FAILED if item.failure else BatchItemStatus.SUCCEEDED


def _circuit_open(channel: str) -> Failure:
    return Failure(FailureReason.CIRCUIT_OPEN,
                   f"channel {channel!r} is failing; its circuit is open")


async def _charge_batch_with_retries(
    channel: PaymentChannel, breaker: CircuitBreaker, orders: list[ChargeOrder],
    timeout_ms: int, deadline_ms: float,
) -> list[ChargeRecord] | NoOutcome:
    """One bulk call under charge_with_retries' rules, counted once per
    call. BulkChargeUnsupported is raised."""
    return await call_with_retries(
        channel.name, breaker,
        lambda call_timeout_ms: channel.charge_batch(orders, call_timeout_ms),
        timeout_ms, deadline_ms, "charges")