"""Retention: events older than the retention period are deleted, in small
chunks (one transaction each, so SQLite's single writer is never held
long), never one after the smallest consumer cursor (event_consumers:
AckEvents consumers and the RabbitMQ relay). On PostgreSQL one replica at
a time prunes (the store's advisory lock); the others skip their turn."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from paygrid_server.domain.model import clock
from paygrid_server.domain.ports.event_consumers import EventPruner

log = structlog.get_logger("paygrid.events.retention")

US_PER_DAY = 86_400 * 1_000_000


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    retention_us: int  # 0: keep every event
    interval_s: float  # between two pruning rounds
    chunk_rows: int  # events deleted per transaction


class EventRetention:
    def __init__(self, pruner: EventPruner, policy: RetentionPolicy) -> None:
        self._pruner = pruner
        self._policy = policy
        # One round at a time in this process (the periodic one and one
        # asked for); other replicas are kept out by the store.
        self._round = asyncio.Lock()

    async def prune(self, now_us: int | None = None) -> int:
        """One round: chunks until none is full. Returns events deleted.
        `now_us` (default: the clock) lets tests age the log at will."""
        if self._policy.retention_us <= 0:
            return 0
        async with self._round:
            return await self._prune(
                (clock.now_us() if now_us is None else now_us) - self._policy.retention_us)

    async def _prune(self, older_than: int) -> int:
        total = 0
        while True:
            deleted = await self._pruner.prune_chunk(older_than, self._policy.chunk_rows)
            if deleted is None:  # another replica is at it
                return total
            total += deleted
            if deleted < self._policy.chunk_rows:
                if total:
                    log.info("events.pruned", events=total, older_than_us=older_than)
                return total

    async def run_periodically(self) -> None:
        """Until cancelled, a round every interval (the first after one:
        start-up has enough to do); a failed round is logged and tried
        again next time."""
        while True:
            await asyncio.sleep(self._policy.interval_s)
            try:
                await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - retention must outlive a database hiccup
                log.warning("events.prune_failed", exc_info=True)
