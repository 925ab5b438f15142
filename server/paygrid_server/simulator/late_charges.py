"""Charges a fault delays (channel_faults.py: a latency spike or a hold)
are booked to their end even if their call is cancelled meanwhile: the
channel has the request, as a real one would, so the charge can land after
the caller gave up (and after paygrid fenced the key). Kept apart from the
servicer (channel_simulator.py), which only says what to book and when.
"""

from __future__ import annotations

import asyncio
from typing import Callable, TypeVar

import grpc

from paygrid_server.simulator.channel_faults import ChargeDropped, ChargeFault

T = TypeVar("T")


class LateCharges:
    def __init__(self) -> None:
        # Charge work a spike or hold keeps going after its call is gone.
        self._tasks: set[asyncio.Task] = set()

    async def book(self, fault: ChargeFault, book: Callable[[], T],
                   context: grpc.aio.ServicerContext) -> T:
        """`book()` now, or after the fault's delay; a delayed booking runs
        to its end even if the call is cancelled meanwhile."""
        if not fault.delays:
            return book()

        async def book_late() -> T:
            if not await fault.wait():
                raise ChargeDropped()
            return book()

        task = asyncio.get_running_loop().create_task(book_late())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A dropped call's caller may be gone: its exception is seen here.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            return await asyncio.shield(task)
        except ChargeDropped:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "simulated lost request (dropped)")
            raise

    async def finish(self) -> None:
        """Waits until every delayed charge has landed (or been refused by
        its fence); held charges must have been released."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
