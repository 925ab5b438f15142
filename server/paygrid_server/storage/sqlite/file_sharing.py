"""How a process shares its SQLite file, and what unfinished work in it is
this process's to take up.

A lone server has the file to itself (storage/database_lock.py): what it
does not run, nobody runs, and recovery takes up everything unfinished.
`serve --workers N` runs N processes on one file; then each keeps the rules
PostgreSQL replicas keep (storage/postgres/payment_store.py): a payment or
refund in flight on another worker looks exactly like an abandoned one, so
a worker takes up its own unfinished work, and another's only once no call
can still be driving it (HANDOFF_AFTER_MS). The exception is the first
worker a supervisor starts: the supervisor starts workers one after
another, so at that worker's start no other process lives on the file, and
everything unfinished is a dead process's: it takes it all up at once, as a
lone server does. The supervisor says so (worker_supervisor.FIRST_WORKER_ENV);
it is never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from paygrid_server.storage.handoff import handoff_cutoff_us


@dataclass(frozen=True)
class FileSharing:
    workers: bool  # other processes of this server may write the file now or later
    alone_at_start: bool  # no other process lives on the file at this one's start


LONE = FileSharing(workers=False, alone_at_start=True)


class UnfinishedWork:
    """Ids of payments (or refunds) this process stored and has not
    finished, and which unfinished ones it may take up."""

    def __init__(self, sharing: FileSharing) -> None:
        self._shared = sharing.workers
        self._take_all_once = sharing.alone_at_start  # the first listing only
        self._own: set[str] = set()

    def started(self, work_id: str) -> None:
        if self._shared:
            self._own.add(work_id)

    def finished(self, work_id: str) -> None:
        self._own.discard(work_id)

    def listing(self) -> Callable[[str, int], bool]:
        """For one listing of unfinished work: whether this process takes up
        the one with that id, stored at that time (µs)."""
        take_all, self._take_all_once = self._take_all_once or not self._shared, False
        cutoff_us = handoff_cutoff_us()

        def takes(work_id: str, stored_at_us: int) -> bool:
            if take_all:
                self.started(work_id)  # this process drives it from now on
                return True
            return work_id in self._own or stored_at_us < cutoff_us
        return takes

    def may_be_running_elsewhere(self, work_id: str, stored_at_us: int) -> bool:
        """Whether another worker may be driving this unfinished work now."""
        return (self._shared and work_id not in self._own
                and stored_at_us >= handoff_cutoff_us())
