"""The executions (payments, refunds, batch runs) running in this process.

Its own module because payments and batches both use it: neither imports the
other to get it."""

from __future__ import annotations

import asyncio


class InFlight:
    """Executions running in this process, so a replay is not run twice and
    shutdown can wait for them."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task] = {}

    def __contains__(self, ident: str) -> bool:
        return ident in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def run(self, ident: str, coro) -> asyncio.Task:
        assert ident not in self._tasks, f"{ident} is already executing"
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks[ident] = task
        task.add_done_callback(lambda _: self._tasks.pop(ident, None))
        return task

    async def drain(self, timeout_s: float) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=timeout_s)
