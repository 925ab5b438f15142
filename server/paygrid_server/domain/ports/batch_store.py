"""What the batch domain needs from storage. Each method is one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from paygrid_server.domain.model.batch import (
    Batch,
    BatchCounts,
    BatchGroup,
    BatchHeader,
    BatchItem,
    BatchItemStatus,
    BatchStatus,
    ItemResult,
)
from paygrid_server.domain.model.payment import Failure


@dataclass(slots=True)
class IngestOutcome:
    new: list[BatchItem] = field(default_factory=list)  # stored now (RECEIVED or REJECTED)
    refused: list[ItemResult] = field(default_factory=list)  # duplicates and conflicts, not stored
    resent: list[BatchItem] = field(default_factory=list)  # stored by an earlier submission


class BatchStore(Protocol):
    async def insert_batch(self, batch: Batch) -> Batch | None:
        """Stores a new batch; when the tenant's batch_id is taken, the batch
        holding it. Every later call names the batch by its uid."""
        ...

    async def get_batch(self, tenant_id: str, batch_id: str) -> Batch | None: ...

    async def get_batch_by_uid(self, batch_uid: str) -> Batch | None: ...

    async def start_submission(self, batch_uid: str, header: BatchHeader,
                               started_at_us: int) -> tuple[int, int, int]:
        """Marks the batch RECEIVING for a new stream; returns the
        submission number, the next item seq and the next group number."""
        ...

    async def insert_items(self, batch_uid: str, submission: int, items: list[BatchItem],
                           unstored_rejections: int) -> IngestOutcome:
        """Stores arriving items; a reference already stored is a duplicate
        (same submission), a conflict (other content) or a resend."""
        ...

    async def mark_group_processing(self, batch_uid: str, group: BatchGroup) -> None: ...

    async def save_group_results(self, batch_uid: str, group: BatchGroup) -> None: ...

    async def save_items(self, batch_uid: str, items: list[BatchItem]) -> None: ...

    async def reject_waiting_items(self, batch_uid: str, failure: Failure) -> int:
        """Every item not yet in a group (RECEIVED) becomes REJECTED for
        `failure`; how many did."""
        ...

    async def items_after(self, batch_uid: str, after_seq: int, limit: int,
                          statuses: tuple[BatchItemStatus, ...] = ()) -> list[BatchItem]:
        """Items in seq order after `after_seq`; only `statuses` if given."""
        ...

    async def counts(self, batch_uid: str) -> BatchCounts: ...

    async def group_processing_us(self, batch_uid: str) -> list[int]: ...

    async def set_status(self, batch_uid: str, status: BatchStatus) -> None: ...

    async def finish_submission(self, batch_uid: str, status: BatchStatus, wall_us: int,
                                completed_at_us: int | None) -> None: ...

    async def interrupt_abandoned(self) -> int:
        """At start-up: batches left RECEIVING or PROCESSING by a stopped
        server become INTERRUPTED (PostgreSQL: only those whose submission
        lease no live replica holds, see group_queue.py). Returns how
        many."""
        ...
