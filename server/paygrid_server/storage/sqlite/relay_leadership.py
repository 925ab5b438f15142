"""The relay's leadership on SQLite: nothing to decide."""

from __future__ import annotations

import asyncio


class SqliteRelayLeadership:
    """One server per SQLite file (storage/database_lock.py): it always leads."""

    def __init__(self) -> None:
        self.lost = asyncio.Event()  # never set

    async def acquire(self) -> None:
        return None

    async def release(self) -> None:
        return None
