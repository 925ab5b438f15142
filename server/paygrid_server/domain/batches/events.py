"""What a running batch tells its submitter, in order, through a bounded outbox."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import AsyncIterator, Union

from paygrid_server.domain.model.batch import BatchCounts, BatchGroup, BatchStatus, ItemResult
from paygrid_server.domain.batches.timing import BatchTiming


@dataclass(frozen=True, slots=True)
class ItemsRejected:
    items: list[ItemResult]


@dataclass(frozen=True, slots=True)
class ItemsAlreadyProcessed:
    items: list[ItemResult]


@dataclass(frozen=True, slots=True)
class GroupCompleted:
    group: BatchGroup


@dataclass(frozen=True, slots=True)
class BatchSummary:
    batch_id: str
    status: BatchStatus
    counts: BatchCounts
    timing: BatchTiming


BatchEvent = Union[ItemsRejected, ItemsAlreadyProcessed, GroupCompleted, BatchSummary]

_CLOSED = object()


class Outbox:
    """Bounded, so a client that stops reading slows the batch down instead
    of filling memory. Once detached (the client is gone) events are dropped,
    so the batch can still run its started groups to a safe stop."""

    def __init__(self, capacity: int) -> None:
        self._queue: asyncio.Queue = asyncio.Queue(capacity)
        self._detached = False

    async def emit(self, event: BatchEvent) -> None:
        if not self._detached:
            await self._queue.put(event)

    async def close(self) -> None:
        if not self._detached:
            await self._queue.put(_CLOSED)

    def detach(self) -> None:
        self._detached = True
        while not self._queue.empty():  # frees any emitter waiting for room
            self._queue.get_nowait()
        self._queue.put_nowait(_CLOSED)  # and ends any reader

    async def events(self) -> AsyncIterator[BatchEvent]:
        while (event := await self._queue.get()) is not _CLOSED:
            yield event
