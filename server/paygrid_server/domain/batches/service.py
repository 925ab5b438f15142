"""Batch payments: open a submission, report a batch, list its items."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import AsyncIterator

from paygrid_server.domain.model import clock, limits
from paygrid_server.domain.model.batch import (
    Batch,
    BatchCounts,
    BatchItem,
    BatchItemStatus,
    BatchStatus,
)
from paygrid_server.domain.batches.workers import BatchLeaseLimits, GroupWorkers
from paygrid_server.domain.batches.run import BatchRun
from paygrid_server.domain.batches.timing import BatchTiming, batch_timing
from paygrid_server.domain.model.batch_validation import BatchHeaderInput, validate_header
from paygrid_server.domain.charging.charge_path import ChargePath
from paygrid_server.domain.model.errors import NotFound, PreconditionFailed, RequestInProgress
from paygrid_server.domain.in_flight import InFlight
from paygrid_server.domain.model.request_validation import Violations, check_text
from paygrid_server.domain.ports.batch_store import BatchStore

RETRY_OPEN_BATCH_AFTER_MS = 1_000


@dataclass(frozen=True, slots=True)
class BatchReport:
    batch: Batch
    counts: BatchCounts
    timing: BatchTiming


def batch_report(batch: Batch, counts: BatchCounts, group_processing_us: list[int],
                 now_us: int) -> BatchReport:
    """What GetBatch answers, and a batch event carries, from stored state."""
    wall_us = batch.wall_us_before
    if batch.status in (BatchStatus.RECEIVING, BatchStatus.PROCESSING):
        wall_us += now_us - batch.submission_started_at_us
    timing = batch_timing(group_processing_us, counts.succeeded + counts.failed, wall_us)
    return BatchReport(batch, counts, timing)


class BatchService:
    def __init__(self, store: BatchStore, path: ChargePath, in_flight: InFlight,
                 workers: GroupWorkers, lease: BatchLeaseLimits) -> None:
        self._workers = workers
        self._lease = lease
        self._store = store
        self._path = path
        self._in_flight = in_flight

    async def open(self, tenant_id: str, header_input: BatchHeaderInput) -> BatchRun:
        """Starts a submission; the run goes on even if the stream drops."""
        header = validate_header(header_input)
        now_us = clock.now_us()
        fresh = Batch(tenant_id=tenant_id, batch_id=header.batch_id, uid=f"bat_{uuid.uuid4().hex}", header=header,
                      fingerprint=header.fingerprint(), status=BatchStatus.RECEIVING,
                      submissions=0, created_at_us=now_us, submission_started_at_us=now_us)
        batch = await self._store.insert_batch(fresh) or fresh
        if batch.fingerprint != fresh.fingerprint:
            raise PreconditionFailed(
                "header.batch_id", "BATCH_ID_REUSED",
                f"batch {header.batch_id!r} exists with another payer or grouping; "
                "use a new batch_id for a new batch")
        if batch.status is BatchStatus.REJECTED:
            raise PreconditionFailed(
                "header.batch_id", "BATCH_REJECTED",
                f"batch {header.batch_id!r} was rejected (its control totals did not match) "
                "and nothing was charged; send the corrected batch with a new batch_id")
        ident = f"batch:{batch.uid}"
        # One submission per batch at a time, whichever replica: the
        # database's submission lease (held by a live replica, renewed while
        # its run lasts) decides; in this process, the in-flight check after
        # the last await does.
        if ident in self._in_flight or not await self._workers.queue.acquire_submission(
                batch.uid, self._workers.owner, self._lease.lease_ms) or ident in self._in_flight:
            raise RequestInProgress(header.batch_id, RETRY_OPEN_BATCH_AFTER_MS, "batch_id")
        run = BatchRun(batch, header, self._store, self._path, self._workers, self._lease)
        self._in_flight.run(ident, run.run())
        return run

    async def report(self, tenant_id: str, batch_id: str) -> BatchReport:
        batch = await self._find(tenant_id, batch_id)
        counts = await self._store.counts(batch.uid)
        return batch_report(batch, counts, await self._store.group_processing_us(batch.uid),
                            clock.now_us())

    async def items(self, tenant_id: str, batch_id: str,
                    status: BatchItemStatus | None) -> AsyncIterator[list[BatchItem]]:
        """Stored items in arrival order, a page at a time."""
        batch = await self._find(tenant_id, batch_id)
        statuses = (status,) if status else ()
        after = 0
        while page := await self._store.items_after(batch.uid, after, limits.BATCH_PAGE_ITEMS,
                                                    statuses):
            after = page[-1].seq
            yield page

    async def _find(self, tenant_id: str, batch_id: str) -> Batch:
        v = Violations()
        check_text(v, "batch_id", batch_id, limits.BATCH_ID_MAX_CHARS, required=True)
        v.raise_if_any()
        batch = await self._store.get_batch(tenant_id, batch_id)
        if batch is None:
            raise NotFound("batch", batch_id)
        return batch
