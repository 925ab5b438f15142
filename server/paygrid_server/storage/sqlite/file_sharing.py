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
it is never guessed. The hand-off rule itself is both engines' one
(storage/handoff.py): this file only says how a process shares its file.
"""

from __future__ import annotations

from dataclasses import dataclass

from paygrid_server.storage.handoff import UnfinishedWork as SharedUnfinishedWork


@dataclass(frozen=True)
class FileSharing:
    workers: bool  # other processes of this server may write the file now or later
    alone_at_start: bool  # no other process lives on the file at this one's start


LONE = FileSharing(workers=False, alone_at_start=True)


class UnfinishedWork(SharedUnfinishedWork):
    """The hand-off rule (storage/handoff.py) for a process on a file
    shared as `sharing` says."""

    def __init__(self, sharing: FileSharing) -> None:
        super().__init__(shared=sharing.workers, take_all_first=sharing.alone_at_start)
