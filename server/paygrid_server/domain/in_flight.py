"""The executions (payments, refunds, batch runs) running in this process.

Its own module because payments and batches both use it: neither imports the
other to get it."""

from __future__ import annotations

import asyncio

import structlog

log = structlog.get_logger("paygrid.executions")


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

    def answer(self, ident: str, coro) -> asyncio.Future:
        """Runs `coro` as run() does, and returns a future of its outcome
        for the caller: cancelling that future (the caller went away)
        leaves the execution running, as asyncio.shield(run(...)) would.
        One done callback does both jobs: shield's two and run()'s own were
        three loop callbacks and a future more on every Pay."""
        assert ident not in self._tasks, f"{ident} is already executing"
        loop = asyncio.get_running_loop()
        task = loop.create_task(coro)
        self._tasks[ident] = task
        outcome = loop.create_future()

        def ended(_: asyncio.Task) -> None:
            self._tasks.pop(ident, None)
            if outcome.done():
                # The caller went away: nobody else will see the error, so
                # it is logged here (and, retrieved, not reported again by
                # asyncio as an exception never retrieved).
                if not task.cancelled() and task.exception() is not None:
                    log.error("execution.failed_unanswered", execution_id=ident,
                              exc_info=task.exception())
            else:
                pass_outcome(task, outcome)
        task.add_done_callback(ended)
        return outcome

    async def drain(self, timeout_s: float) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=timeout_s)


def pass_outcome(task: asyncio.Task, future: asyncio.Future) -> None:
    """Gives the pending `future` the outcome of the ended `task`."""
    if task.cancelled():
        future.cancel()
    elif task.exception() is not None:
        future.set_exception(task.exception())
    else:
        future.set_result(task.result())
