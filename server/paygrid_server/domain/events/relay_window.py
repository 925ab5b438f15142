"""The relay's sliding window of publishes, and its cursor saves.

Up to `size` events are out at once; each confirm that completes the
confirmed prefix moves the cursor, and the next events go out as soon as
they are written, or (behind) as soon as half the window is free (read in
one query, not one per confirm). So one slow confirm holds back the
cursor, not the publishing: the window the
relay had before waited for all its confirms, and a single held confirm
stalled it for up to the confirm timeout.

The cursor is saved in the background, one save at a time, always a
confirmed prefix: while one save is on disk the cursor moves on, and the
next save takes it from there (saves follow the disk, not the confirms).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from paygrid_server.domain.model.event import Event
from paygrid_server.domain.ports.event_relay import PublishFailed, RelayPosition


class PublishWindow:
    """Publishes in seq order; tracks the confirmed prefix."""

    def __init__(self, size: int, publish: Callable[[Event], Awaitable[None]],
                 cursor: int) -> None:
        self._size = size
        self._publish = publish
        self._in_flight: deque[tuple[int, asyncio.Future]] = deque()  # seq order
        self._ended = asyncio.Event()  # a publish ended since the last look
        self.failed = False  # a publish failed: publish nothing more
        self.confirmed_through = cursor  # it and every event before it confirmed
        self.confirmed = 0

    @property
    def room(self) -> int:
        """How many events to read next: none until half the window is free."""
        free = self._size - len(self._in_flight)
        return 0 if self.failed or free < (self._size + 1) // 2 else free

    @property
    def empty(self) -> bool:
        return not self._in_flight

    def send(self, events: list[Event]) -> None:
        # Tasks start in seq order, so the publishes reach the broker in it.
        for event in events:
            task = asyncio.ensure_future(self._publish(event))
            task.add_done_callback(self._on_end)
            self._in_flight.append((event.seq, task))

    def _on_end(self, task: asyncio.Future) -> None:
        self._ended.set()
        if task.cancelled() or task.exception() is not None:
            self.failed = True

    async def settle(self, or_until: Callable[[], Awaitable] | None = None) -> BaseException | None:
        """Waits for a publish to end (or `or_until`, a log change: events
        written meanwhile go out while earlier confirms are held), then
        moves the confirmed prefix. After a failure, waits for every publish
        out (the broker may still confirm those before it) and returns the
        first failure in seq order."""
        if or_until is None or self._ended.is_set():
            await self._ended.wait()
        else:
            waits = {asyncio.ensure_future(self._ended.wait()), asyncio.ensure_future(or_until())}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        self._ended.clear()
        if self.failed:
            await asyncio.gather(*(task for _, task in self._in_flight), return_exceptions=True)
        while self._in_flight and self._in_flight[0][1].done():
            seq, task = self._in_flight[0]
            if task.cancelled():
                return PublishFailed(f"seq {seq}: cancelled")
            if task.exception() is not None:
                return task.exception()
            self._in_flight.popleft()
            self.confirmed += 1
            self.confirmed_through = seq
        return None

    async def abandon(self) -> None:
        """Ends what is still out (the session is over: nothing waits for it)."""
        for _, task in self._in_flight:
            task.cancel()
        await asyncio.gather(*(task for _, task in self._in_flight), return_exceptions=True)
        self._in_flight.clear()


class CursorSaver:
    """At most one save in flight; `on_saved(cursor)` after each."""

    def __init__(self, position: RelayPosition, saved: int,
                 on_saved: Callable[[int], None]) -> None:
        self._position = position
        self._saved = self._wanted = saved
        self._on_saved = on_saved
        self._task: asyncio.Task | None = None

    def offer(self, cursor: int) -> None:
        """Saves `cursor` (confirmed) soon; raises a failed earlier save's error."""
        self._wanted = max(self._wanted, cursor)
        if self._task is not None and self._task.done():
            task, self._task = self._task, None
            task.result()
        if self._task is None and self._wanted > self._saved:
            self._task = asyncio.ensure_future(self._save_while_behind())

    async def flush(self) -> None:
        """Returns once the last offered cursor is saved."""
        if self._task is not None:
            task, self._task = self._task, None
            await task
        await self._save_while_behind()

    async def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _save_while_behind(self) -> None:
        while self._wanted > self._saved:
            cursor = self._wanted
            await self._position.save(cursor)
            self._saved = cursor
            self._on_saved(cursor)
