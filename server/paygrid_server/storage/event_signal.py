"""In-process wake-up for event watchers: a counter of writes and one
asyncio.Event per generation. Thousands of idle watchers are thousands of
awaited futures, no polling. Only a wake-up: watchers read the log itself
for what changed (SQLite: the store that wrote signals; PostgreSQL: the
LISTEN connection does, for writes of every replica)."""

from __future__ import annotations

import asyncio


class EventSignal:
    def __init__(self) -> None:
        self._count = 0
        self._changed = asyncio.Event()

    @property
    def count(self) -> int:
        return self._count

    def notify(self) -> None:
        """From the event loop's thread only."""
        self._count += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, seen: int, timeout_s: float) -> bool:
        if self._count != seen:
            return True
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
