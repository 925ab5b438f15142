"""Where a batch's formed groups wait to be charged, and who may charge them.

Two implementations, chosen by the storage engine (app.py):
- PostgreSQL (storage/postgres/group_queue.py): groups are durable work units
  any replica claims under a lease (FOR UPDATE SKIP LOCKED, expiry, a fencing
  token), so several servers share one batch and finish a dead one's groups.
- SQLite (storage/single_process_group_queue.py): one server process owns the
  file, so leases would buy nothing: groups wait in memory and their items
  are written exactly as before leases existed (PROCESSING before the charge,
  results after: two writes per group). A crash is recovered when the batch
  is resubmitted (its run settles the items left mid-charge).

The domain (batches/run.py, batches/workers.py) uses either the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol

from paygrid_server.domain.model.batch import BatchGroup, BatchItem


@dataclass(frozen=True, slots=True)
class GroupLease:
    """One replica's claim on a group. `token` (the group's claim count) fences
    it: writes under the lease succeed only while no later claim was made."""
    batch_uid: str
    group_no: int
    group_key: str
    owner: str
    token: int
    # Why the batch stopped (STOP_ON_FIRST_FAILURE), as the claim saw it.
    stopped_after: str | None = None

    @property
    def taken_over(self) -> bool:
        """Claimed before (its replica died or gave it up): items it left
        mid-charge must be settled with their channel before anything else."""
        return self.token > 1


@dataclass(frozen=True, slots=True)
class DoneGroup:
    group_no: int
    group_key: str
    started_at_us: int
    completed_at_us: int | None  # None: skipped (a stopped batch), never charged
    processed_by: str | None


class GroupQueue(Protocol):
    # True: groups outlive the process (claimed again after a lease runs
    # out; the claimant settles what the earlier holder left mid-charge).
    # False: groups live in this process; a resubmitted batch's run settles
    # items a stopped server left PROCESSING (batches/resume.py).
    durable: bool

    async def queue_group(self, batch_uid: str, group: BatchGroup, parallelism: int) -> None:
        """A formed group (its items RECEIVED) waits to be claimed; at most
        `parallelism` groups of the batch are leased at once (durable: the
        batch's stored parallelism, which start_submission sets, counts)."""
        ...

    async def claim_group(self, owner: str, lease_ms: int) -> GroupLease | None:
        """Leases the lowest queued (or expired) group of some batch that has
        fewer live leases than its parallelism; None when there is none."""
        ...

    async def renew_group_lease(self, lease: GroupLease, lease_ms: int) -> bool:
        """False when the lease was lost (another claim was made)."""
        ...

    async def release_group_lease(self, lease: GroupLease) -> None:
        """Gives the group up at once, e.g. after a failure (durable: it
        expires now and is claimed again; in memory: it is dropped, its
        items wait, stored, for the batch's resubmission)."""
        ...

    def abandon_group_lease(self, lease: GroupLease) -> None:
        """Its worker was cancelled mid-group (shutdown past its grace): forget
        the lease here, with no I/O, leaving the group as a crash would (in
        memory: dropped, so the batch's run is not left waiting for it;
        durable: nothing to do, the lease runs out and is taken over)."""
        ...

    async def group_items(self, batch_uid: str, group_no: int) -> list[BatchItem]: ...

    async def mark_group_processing(self, batch_uid: str, group: BatchGroup,
                                    lease: GroupLease | None = None) -> bool:
        """Items PROCESSING before any charge; False (nothing written) when
        `lease` was lost."""
        ...

    async def save_group_results(self, batch_uid: str, group: BatchGroup,
                                 lease: GroupLease | None = None,
                                 stops_batch: str | None = None,
                                 next_may_start: bool = False) -> bool:
        """The group's items and the group DONE in one transaction (with
        `stops_batch`, the batch stopped too); False (nothing written) when
        `lease` was lost. `next_may_start`: nothing can stop the batch before
        its next group (its failure policy never does), so the in-memory queue
        may mark that group PROCESSING in the same transaction (marked ahead:
        storage/single_process_group_queue.py); the durable queues ignore it
        (a group is marked under its own lease)."""
        ...

    async def save_items(self, batch_uid: str, items: list[BatchItem],
                         lease: GroupLease | None = None) -> bool: ...

    async def unfinished_groups(self, batch_uid: str) -> list[int]:
        """Groups queued or leased, not done (in memory: none outlive a run)."""
        ...

    async def done_groups(self, batch_uid: str, group_nos: list[int]) -> list[DoneGroup]:
        """Which of `group_nos` are done (by any replica)."""
        ...

    async def stop_batch(self, batch_uid: str, cause: str) -> None:
        """STOP_ON_FIRST_FAILURE: no group is charged after this (first cause kept)."""
        ...

    # -- one submission at a time, whichever replica ---------------------------

    async def acquire_submission(self, batch_uid: str, owner: str, lease_ms: int) -> bool:
        """Takes the batch's submission lease when it is free, expired or
        already `owner`'s; False when another live replica holds it."""
        ...

    async def renew_submission(self, batch_uid: str, owner: str, lease_ms: int) -> bool: ...

    async def release_submission(self, batch_uid: str, owner: str) -> None:
        """The batch's stream is over (in memory: once its groups still
        charging here are done; groups not claimed yet are dropped, their
        items wait, stored, for a resubmission)."""
        ...

    async def watch_groups(self, changed: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        """Calls `changed()` whenever any replica queues a group or finishes
        one (so idle replicas claim at once, and streams tell groups done
        elsewhere without waiting for their poll); returns how to stop.
        Only a hint: polling stays the guarantee."""
        ...

    async def interrupt_abandoned(self) -> int:
        """Now and then while running: batches whose stream's replica died
        (submission lease free or expired) become INTERRUPTED. In memory:
        nothing (start-up's BatchStore.interrupt_abandoned covers a crash)."""
        ...

    async def expire_leases_of(self, owner: str) -> int:
        """`owner` is known dead (its supervisor saw it exit): its group and
        submission leases expire now, not when their time runs out, so any
        replica takes its groups over at once (fenced by the claim count as
        ever). Returns how many groups it held. In memory: 0 (no other
        process ever held anything here)."""
        ...
