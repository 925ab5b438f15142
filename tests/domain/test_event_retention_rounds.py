"""EventRetention's rounds, over a pruner that records its calls: chunks
until one is short, the cut-off is now minus the period, a round that
fails does not end the periodic task, and another replica's lock ends a
round at once. The stores' side is tests/api/test_event_retention.py."""

from __future__ import annotations

import asyncio

import pytest

from paygrid_server.domain.events.event_retention import EventRetention, RetentionPolicy
from tests.support.server_process import wait_for


class RecordingPruner:
    def __init__(self, answers: list) -> None:
        self.answers = answers  # deleted per call (None: locked out; an exception: raised)
        self.calls: list[tuple[int, int]] = []

    async def prune_chunk(self, older_than_us: int, max_rows: int) -> int | None:
        self.calls.append((older_than_us, max_rows))
        answer = self.answers.pop(0) if self.answers else 0
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_a_round_prunes_chunks_until_one_is_short() -> None:
    pruner = RecordingPruner([3, 3, 1])
    retention = EventRetention(pruner, RetentionPolicy(retention_us=1_000, interval_s=60,
                                                      chunk_rows=3))
    assert await retention.prune(now_us=5_000) == 7
    assert pruner.calls == [(4_000, 3)] * 3
    # Exactly a full last chunk: one more call finds nothing, and the round ends.
    pruner.answers = [3, 0]
    assert await retention.prune(now_us=5_000) == 3
    assert len(pruner.calls) == 5


async def test_another_replica_pruning_ends_the_round() -> None:
    pruner = RecordingPruner([3, None, 3])
    retention = EventRetention(pruner, RetentionPolicy(1_000, 60, 3))
    assert await retention.prune(now_us=5_000) == 3
    assert len(pruner.calls) == 2


async def test_zero_retention_never_prunes() -> None:
    pruner = RecordingPruner([])
    assert await EventRetention(pruner, RetentionPolicy(0, 60, 3)).prune(now_us=5_000) == 0
    assert pruner.calls == []


async def test_the_periodic_task_survives_a_failed_round() -> None:
    pruner = RecordingPruner([RuntimeError("database away"), 0, 0])
    task = asyncio.ensure_future(
        EventRetention(pruner, RetentionPolicy(1_000, 0.001, 3)).run_periodically())
    try:
        await wait_for(lambda: len(pruner.calls) >= 3, "three rounds, the first failed")
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
