"""Workers' turns at the SQLite file's write lock: an flock(2) on
"<database>.write.lock", taken by a worker's writer before its BEGIN
IMMEDIATE and given back after its COMMIT: on the event loop when it is free
(loop_rounds.py), else by the writer's thread, which waits for it.

Why: with `serve --workers N` the workers' writers take turns at the file's
one write lock. Left to SQLite, a writer that finds the lock taken waits in
its busy handler, which sleeps 1, 2, 5, 10, 15, 20 ... ms between tries: it
sleeps on long after the lock was freed while the other worker takes it
again, and the lock sits idle. A writer blocked in flock is woken by the
kernel when the turn is given back, and, since it waits before it collects
its queue, its commit then carries every unit queued meanwhile (fewer
fsyncs per unit). Measured with 2 workers (docs/operations/workers.md): the
lock sat free while a writer waited 8% of the time instead of 20%.

The turn only orders the workers' writers; SQLite's lock still guards the
file (busy_timeout stays, for any other connection). The kernel frees the
turn when its holder dies. A holder that is frozen (SIGSTOP) keeps it, and the
other workers' writes wait for it instead of failing with SQLITE_BUSY after
busy_timeout; a frozen holder also froze them before, only with errors.
A lone server takes no turn: nobody else writes its file.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import structlog

log = structlog.get_logger("paygrid.storage")


def write_turn_path(database: Path) -> Path:
    return database.with_name(database.name + ".write.lock")


class WriteTurn:
    """Used by the writer's thread and its event loop, never at once (the
    loop uses the connection only while the thread has no job of it)."""

    def __init__(self, database: Path) -> None:
        self._fd = os.open(write_turn_path(database), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                           0o644)

    def take(self) -> bool:
        """Whether the turn was taken. Waits in the kernel, the GIL released.
        Never raises: without the turn the writer still writes (SQLite's lock
        guards the file), and its thread must go on."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError:  # ENOLCK, say
            log.warning("storage.write_turn_failed", exc_info=True)
            return False
        return True

    def take_without_waiting(self) -> bool:
        """Whether the turn was free and is now held: the event loop's try,
        which must not wait (a taken turn is waited for on the thread)."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # taken (EWOULDBLOCK), or ENOLCK: take() logs that one
            return False
        return True

    def give(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)  # gives the turn back too, if held
