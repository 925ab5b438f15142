"""A replica's batch group workers: they claim groups of any batch (whichever
replica's stream formed them) from the group queue, charge them under a
lease and store their results only while the lease is still theirs.

    claim (lease, fencing token) -> [taken over: settle what the dead
    replica left mid-charge with the channel] -> mark PROCESSING -> charge
    -> store results + DONE, fenced -> tell the batch's stream, if here

A lease is renewed every renew_every_ms while the group charges; a replica
that dies stops renewing, and once lease_ms has passed any replica claims
the group again. The new claim makes the old lease's writes fail (fenced),
and the channel's idempotency keys make a charge the dead replica had sent
a replay, not a second charge.

What is done with one claimed group is group_steps.py. The queue
(domain/ports/group_queue.py) is PostgreSQL's durable leases, the same
leases in the file for SQLite workers, or, for a lone SQLite server, groups
in memory whose leases are never lost: the same steps, with no lease
written, renewed or fenced.
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol

import structlog

from paygrid_server.domain.model import clock
from paygrid_server.domain.model.batch import BatchGroup
from paygrid_server.domain.batches.group_steps import GroupSteps, LeaseLost
from paygrid_server.domain.charging.charge_path import ChargePath
from paygrid_server.domain.payments_first import PaymentsFirst
from paygrid_server.domain.ports.batch_store import BatchStore
from paygrid_server.domain.ports.group_queue import GroupLease, GroupQueue

__all__ = ["BatchLeaseLimits", "GroupListener", "GroupWorkers", "LeaseLost"]

log = structlog.get_logger("paygrid.batches")


@dataclass(frozen=True, slots=True)
class BatchLeaseLimits:
    group_workers: int = 32  # groups one replica charges at once, all batches together
    lease_ms: int = 15_000  # a group (or a submission) not renewed for this long is taken over
    renew_every_ms: int = 5_000  # leases held are renewed this often (well under lease_ms)
    claim_poll_ms: int = 100  # an idle replica looks for groups to claim this often
    progress_poll_ms: int = 100  # a stream looks for its groups done by other replicas


# After a claim found nothing, the next one waits this long past a wake-up,
# so a burst of them (every replica's groups) costs one claim, not one each.
CLAIM_AFTER_WAKE_MS = 10


class GroupListener(Protocol):
    """The run of a batch's stream, in the replica that has the stream."""

    # The stream's context: a group charged here runs under it (the
    # caller's trace span, the batch's log fields).
    context: contextvars.Context

    def group_done(self, group: BatchGroup) -> None: ...

    def group_failed(self, group_no: int, error: BaseException) -> None: ...

    def groups_changed(self) -> None:
        """Some replica queued or finished a group (maybe one of this batch)."""
        ...


class GroupWorkers:
    def __init__(self, store: BatchStore, queue: GroupQueue, path: ChargePath, owner: str,
                 lease: BatchLeaseLimits, payments_first: PaymentsFirst) -> None:
        self.owner = owner  # this replica, as leases name it
        self.queue = queue  # durable leases (PostgreSQL) or in memory (SQLite)
        self.payments_first = payments_first  # the batches' intakes wait for payments too
        self._steps = GroupSteps(store, queue, path, payments_first)
        self._lease = lease
        self._slots = asyncio.Semaphore(lease.group_workers)
        self._wake = asyncio.Event()
        self._woken_from_afar = False  # the last wake-up was a notification, maybe remote
        self._listeners: dict[str, GroupListener] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.Task | None = None
        self._unwatch: Callable[[], Awaitable[None]] | None = None
        self._last_sweep_ms = 0.0

    # -- wiring ---------------------------------------------------------------

    async def start(self) -> None:
        try:
            self._unwatch = await self.queue.watch_groups(self._groups_changed)
        except Exception:  # noqa: BLE001 - polling alone still finds every group
            log.warning("batch.watch_groups_failed", exc_info=True)
        self._loop = asyncio.get_running_loop().create_task(self._claim_loop())

    def _groups_changed(self) -> None:
        """Another replica (or this one) queued or finished a group."""
        self._woken_from_afar = True
        self._wake.set()
        for listener in list(self._listeners.values()):
            listener.groups_changed()

    async def stop(self, timeout_s: float) -> None:
        """No new claims; groups charging get up to `timeout_s` to store
        their results (what is cut off is taken over by another replica, or
        by this one's next start)."""
        if self._loop is not None:
            self._loop.cancel()
        if self._unwatch is not None:
            try:
                await self._unwatch()
            except Exception:  # noqa: BLE001 - the database may be gone already
                log.warning("batch.unwatch_failed", exc_info=True)
            self._unwatch = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(0.0, timeout_s))
        for task in list(self._tasks):
            task.cancel()

    def wake(self) -> None:
        """A group was queued or a lease freed here: claim now, not at the next poll."""
        self._wake.set()

    def listen(self, batch_uid: str, listener: GroupListener) -> None:
        self._listeners[batch_uid] = listener

    def unlisten(self, batch_uid: str, listener: GroupListener) -> None:
        if self._listeners.get(batch_uid) is listener:
            del self._listeners[batch_uid]

    @property
    def charging(self) -> int:
        return len(self._tasks)

    # -- claiming -------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while True:
            await self._slots.acquire()
            self._wake.clear()
            try:
                lease = await self.queue.claim_group(self.owner, self._lease.lease_ms)
            except Exception:  # noqa: BLE001 - the store may be away for a while
                log.warning("batch.claim_failed", exc_info=True)
                lease = None
            if lease is None:
                self._slots.release()
                await self._sweep()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._lease.claim_poll_ms / 1_000)
                except TimeoutError:
                    pass
                # Notifications come per group queued or done by any replica:
                # the ones of the next moment are answered by one claim. A
                # wake-up from this replica (a group queued or finished here)
                # is answered at once: one claim per free slot anyway.
                if self._woken_from_afar:
                    self._woken_from_afar = False
                    await asyncio.sleep(CLAIM_AFTER_WAKE_MS / 1_000)
                continue
            listener = self._listeners.get(lease.batch_uid)
            context = getattr(listener, "context", None)
            task = asyncio.get_running_loop().create_task(
                self._run_group(lease), context=context.copy() if context else None)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _sweep(self) -> None:
        """Now and then: batches whose stream's replica died show INTERRUPTED."""
        now_ms = clock.monotonic_ms()
        if now_ms - self._last_sweep_ms < self._lease.lease_ms:
            return
        self._last_sweep_ms = now_ms
        try:
            await self.queue.interrupt_abandoned()
        except Exception:  # noqa: BLE001
            log.warning("batch.sweep_failed", exc_info=True)

    async def _run_group(self, lease: GroupLease) -> None:
        # A lease found lost (another replica claimed the group) stops the
        # group here at once: its charges in flight are cancelled and no
        # further item is charged. What it left PROCESSING is settled with
        # the channel by the new holder, as after a crash.
        lost = asyncio.Event()
        this_group = asyncio.current_task()
        assert this_group is not None
        renewing = (asyncio.get_running_loop().create_task(
            self._renew(lease, lost, this_group)) if self.queue.durable else None)
        try:
            group = await self._steps.process(lease)
        except LeaseLost:
            log.warning("batch.group_lease_lost", batch_uid=lease.batch_uid,
                        group_no=lease.group_no)
        except Exception as error:  # noqa: BLE001 - told to the stream, group given up
            log.exception("batch.group_failed", batch_uid=lease.batch_uid,
                          group_no=lease.group_no)
            listener = self._listeners.get(lease.batch_uid)
            if listener is not None:
                listener.group_failed(lease.group_no, error)
            await self._give_up(lease)
        except asyncio.CancelledError:
            if lost.is_set() and this_group.cancelling() == 1:
                # Cancelled by _renew alone, not by a shutdown: not an error.
                this_group.uncancel()
                log.warning("batch.group_lease_lost", batch_uid=lease.batch_uid,
                            group_no=lease.group_no, stopped_mid_charge=True)
                return
            # Cut off by a shutdown past its grace: a lease kept in memory
            # would leave the batch's run waiting for this group forever (and
            # with it the process's exit). What was stored stays resumable.
            log.warning("batch.group_cut_off", batch_uid=lease.batch_uid,
                        group_no=lease.group_no)
            self.queue.abandon_group_lease(lease)
            raise
        else:
            listener = self._listeners.get(lease.batch_uid)
            if listener is not None:
                listener.group_done(group)
        finally:
            if renewing is not None:
                renewing.cancel()
            self._slots.release()
            self.wake()

    async def _give_up(self, lease: GroupLease) -> None:
        """After a failure (e.g. the database is away): frees the group at
        once, retrying until the store takes it or the lease has run out."""
        deadline_ms = clock.monotonic_ms() + self._lease.lease_ms
        while clock.monotonic_ms() < deadline_ms:
            try:
                await self.queue.release_group_lease(lease)
                return
            except Exception:  # noqa: BLE001
                await asyncio.sleep(self._lease.claim_poll_ms / 1_000)

    async def _renew(self, lease: GroupLease, lost: asyncio.Event,
                     group_task: asyncio.Task) -> None:
        while True:
            await asyncio.sleep(self._lease.renew_every_ms / 1_000)
            try:
                renewed = await self.queue.renew_group_lease(lease, self._lease.lease_ms)
            except Exception:  # noqa: BLE001 - try again at the next renewal
                log.warning("batch.lease_renewal_failed", group_no=lease.group_no,
                            exc_info=True)
                continue
            if not renewed:
                # Its results would be refused (fenced): stop charging now.
                lost.set()
                group_task.cancel()
                return
