"""One submission of a batch, from header to summary.

    client messages -> intake (intake.py): validate, store, group
      -> sealed groups queued (at most 2 x parallelism unfinished; stored
         QUEUED on PostgreSQL, in memory on SQLite: domain/ports/group_queue.py)
      -> group workers of any replica claim and charge them (workers.py)
      -> each group done, wherever -> progress (progress.py) -> outbox

Before it takes items, a submission settles what earlier ones left
(resume.py). The run is not the RPC: when the stream drops, groups already
formed still finish and are stored; items not yet in a group wait, stored,
for the batch to be resubmitted. Where the run stands is one RunState
(run_state.py).
"""

from __future__ import annotations

import asyncio
import contextvars

import structlog

from paygrid_server.domain.batches.events import BatchSummary, Outbox
from paygrid_server.domain.batches.failure_policy import BatchStop
from paygrid_server.domain.batches.intake import Intake
from paygrid_server.domain.batches.progress import GroupProgress
from paygrid_server.domain.batches.resume import Resume
from paygrid_server.domain.batches.run_state import RunState
from paygrid_server.domain.batches.timing import batch_timing
from paygrid_server.domain.batches.workers import BatchLeaseLimits, GroupWorkers
from paygrid_server.domain.charging.charge_path import ChargePath
from paygrid_server.domain.model import clock
from paygrid_server.domain.model.batch import Batch, BatchHeader, BatchStatus, FailurePolicy
from paygrid_server.domain.model.transaction_columns import TransactionColumns
from paygrid_server.domain.model.control_totals import ControlTotals
from paygrid_server.domain.model.errors import DomainError
from paygrid_server.domain.ports.batch_store import BatchStore

log = structlog.get_logger("paygrid.batches")


class BatchRun:
    def __init__(self, batch: Batch, header: BatchHeader, store: BatchStore, path: ChargePath,
                 workers: GroupWorkers, lease: BatchLeaseLimits) -> None:
        self.batch = batch
        self._header = header  # this submission's (group size and parallelism may change)
        self._store = store
        self._workers = workers
        self._groups_queue = workers.queue
        self._lease = lease
        self.outbox = Outbox(2 * header.parallelism + 2)
        # Why the stream must end with an error, for the transport to report.
        self.refusal: DomainError | None = None
        self.failure: BaseException | None = None
        self._submission = 0
        self._stop = BatchStop(self._groups_queue, batch.uid)
        self._progress = GroupProgress(batch.uid, self._groups_queue, self.outbox,
                                       2 * header.parallelism, lease.progress_poll_ms)
        self._intake = Intake(batch, header, store, path.router, self._groups_queue,
                              workers.wake, self._progress, self.outbox, self._stop,
                              workers.payments_first)
        self._resume = Resume(batch, header.failure_policy, store, path.settlement,
                              self._groups_queue.durable, self._stop)

    @property
    def state(self) -> RunState:
        return self._intake.state

    # -- the submitter's side (transport) ----------------------------------

    async def submit(self, transactions: TransactionColumns) -> None:
        """Hands over one message's transactions; waits while the batch is busy."""
        await self._intake.submit(transactions)

    async def end(self, declared: ControlTotals | None = None) -> None:
        """The client sent everything; `declared`: control totals its end
        message carries, checked with the header's."""
        await self._intake.end(declared)

    def refuse(self, error: DomainError) -> None:
        """The client broke the protocol: stop taking items; the stream ends
        with `error`. Items already taken are kept for a resubmission."""
        self.refusal = error
        self.abort()
        self.outbox.detach()

    def abort(self) -> None:
        """The stream is gone: stop taking items; groups already formed
        finish, items not yet in a group stay stored for a resubmission."""
        self._intake.abort()

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

    async def _run(self) -> None:
        structlog.contextvars.bind_contextvars(tenant_id=self.batch.tenant_id,
                                               batch_id=self.batch.batch_id)
        self._progress.context = contextvars.copy_context()
        started_us = clock.now_us()
        submission, next_seq, next_group_no = await self._store.start_submission(
            self.batch.uid, self._header, started_us)
        self._submission = submission
        counts = await self._store.counts(self.batch.uid)
        self._intake.start(submission, next_seq, counts.total, next_group_no)
        if self._header.failure_policy is FailurePolicy.STOP_ON_FIRST_FAILURE and (
                counts.failed or counts.rejected):
            self._stop.note("an item failed in an earlier submission")
        log.info("batch.submission_started", submission=submission,
                 parallelism=self._header.parallelism,
                 max_group_size=self._header.max_group_size)
        if self._stop.cause is not None:
            await self._groups_queue.stop_batch(self.batch.uid, self._stop.cause)
        self._progress.adopt(await self._groups_queue.unfinished_groups(self.batch.uid))
        self._workers.listen(self.batch.uid, self._progress)
        reporting = asyncio.create_task(self._progress.report(lambda: self.state.intake_over))
        # Only a durable queue's submission lease expires (in memory: none).
        renewing = (asyncio.create_task(self._renew_submission())
                    if self._groups_queue.durable else None)
        try:
            await self._resume.settle_interrupted_items(self._progress.unfinished)
            refusal = await self._intake.run()
            if refusal is not None:
                self.refusal = refusal
            self._progress.intake_moved()
            await reporting
        finally:
            reporting.cancel()
            if renewing is not None:
                renewing.cancel()
            self._workers.unlisten(self.batch.uid, self._progress)
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

    async def _finish(self, started_us: int) -> None:
        counts = await self._store.counts(self.batch.uid)
        worker_error = self._progress.worker_error
        complete = self.state is RunState.ENDED and counts.pending == 0 and worker_error is None
        status = BatchStatus.COMPLETED if complete else BatchStatus.INTERRUPTED
        if self.state is RunState.REJECTED:
            status = BatchStatus.REJECTED
        finished_us = clock.now_us()
        wall_us = finished_us - started_us
        await self._store.finish_submission(self.batch.uid, status, wall_us,
                                            finished_us if complete else None)
        timing = batch_timing(self._progress.group_processing_us, self._progress.items_final,
                              wall_us)
        log.info("batch.submission_finished", submission=self._submission, status=status.value,
                 total=counts.total, succeeded=counts.succeeded, failed=counts.failed,
                 rejected=counts.rejected, pending=counts.pending, groups=timing.groups,
                 wall_ms=round(wall_us / 1_000, 3), apt_ms=round(timing.apt_us / 1_000, 3),
                 throughput_items_per_s=round(timing.throughput_items_per_s, 1),
                 model_throughput_items_per_s=round(timing.model_throughput_items_per_s, 1))
        if worker_error is not None:
            raise worker_error
        if self.state is RunState.ENDED:
            await self.outbox.emit(BatchSummary(self.batch.batch_id, status, counts, timing))
