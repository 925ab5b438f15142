"""One server process per SQLite file: an OS lock on "<database>.lock".

Two processes on one file would each keep their own in-memory group queue
and fence each other's charges (issue 14). SQLite's own locks only guard a
transaction, so the file is held for the whole life of the process with
flock(2): the kernel releases it when the process exits or is killed, so a
crashed holder never blocks a restart. The holder's pid is written into the
lock file only to name it in the refusal.

`serve --workers N` on SQLite: the supervisor takes the lock for its own
workers and hands each the descriptor (an flock belongs to the open file,
shared by every process holding a copy): a worker holds the file with it
and never takes it itself; a second `serve` is refused as before; and the
file stays held until the supervisor and every worker are gone, so no new
server starts on it while a worker still drains.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DatabaseLocked(Exception):
    """Another live process holds the database."""

    def __init__(self, database: Path, holder_pid: str) -> None:
        self.database = database
        self.holder_pid = holder_pid
        held_by = f"process {holder_pid}" if holder_pid else "another process"
        super().__init__(f"database {database} is in use by {held_by}")


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


class LockNotInherited(Exception):
    """A worker's inherited descriptor is not its database's lock file."""

    def __init__(self, database: Path, fd: int) -> None:
        super().__init__(f"descriptor {fd} is not the lock of database {database} "
                         "(a worker is started by `serve --workers N`, never alone)")


class DatabaseLock:
    def __init__(self, fd: int, owned: bool = True) -> None:
        self._fd: int | None = fd
        self._owned = owned  # False: a worker's copy of its supervisor's lock

    @property
    def fd(self) -> int:
        """The held descriptor, for a worker to inherit."""
        assert self._fd is not None
        return self._fd

    @classmethod
    def inherited(cls, database: Path, fd: int) -> "DatabaseLock":
        """In a worker: the lock its supervisor took (and holds) for it."""
        try:
            held, named = os.fstat(fd), os.stat(lock_path(database))
        except OSError:
            raise LockNotInherited(database, fd) from None
        if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino):
            raise LockNotInherited(database, fd)
        os.set_inheritable(fd, False)  # the worker's own children get none
        return cls(fd, owned=False)

    @classmethod
    def take(cls, database: Path) -> "DatabaseLock":
        """Holds `database` for this process; DatabaseLocked if another does."""
        # Not truncated on open: the holder's pid must survive a refused attempt.
        fd = os.open(lock_path(database), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise DatabaseLocked(database, holder) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # a full or read-only disk: the lock holds all the same, unnamed
        return cls(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if not self._owned:
            os.close(fd)  # the supervisor's copy still holds the file, with its pid
            return
        # The file stays: unlinking it would let a third process lock a new
        # inode while a second one still waits on the old.
        try:
            os.ftruncate(fd, 0)  # no pid of a process that no longer holds it
        except OSError:
            pass
        os.close(fd)  # closing the last descriptor releases the flock
