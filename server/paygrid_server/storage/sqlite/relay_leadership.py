"""The relay's leadership on SQLite: an flock(2) on "<database>.relay.lock".

A lone server takes it at once. With `serve --workers N` exactly one worker
relays: the one holding the lock; the others try again every RETRY_MS (a
non-blocking try, so a stop cancels a waiter at once, never leaving a thread
that takes the lock later). The kernel releases the lock when its holder
dies (SIGKILL included), so a live worker takes over within RETRY_MS; the
relay's saved cursor says where (events may go out twice, never lost).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

RETRY_MS = 200


def relay_lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".relay.lock")


class SqliteRelayLeadership:
    def __init__(self, database: Path) -> None:
        self._path = relay_lock_path(database)
        self._fd: int | None = None
        self.lost = asyncio.Event()  # never set: only its holder's death ends a flock

    async def acquire(self) -> None:
        await self.release()
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(RETRY_MS / 1_000)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # the last descriptor closed releases the flock
