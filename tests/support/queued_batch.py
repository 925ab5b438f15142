"""One batch of 9 items in 3 queued groups (parallelism 2), on either
engine's store and group queue: the starting point of the group queue tests."""

from __future__ import annotations

from paygrid_server.domain.model.batch import (
    Batch,
    BatchGroup,
    BatchHeader,
    BatchItem,
    BatchStatus,
    GroupingPolicy,
)
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.ports.batch_store import BatchStore
from paygrid_server.domain.ports.group_queue import GroupQueue


def card_items(first: int, count: int) -> list[BatchItem]:
    return [BatchItem(seq, f"r{seq:04d}", f"payee_{seq}", Money("EUR", 100 + seq), "", None,
                      "card") for seq in range(first, first + count)]


async def queue_three_groups(store: BatchStore, queue: GroupQueue, uid: str) -> None:
    header = BatchHeader("b1", "payer", GroupingPolicy.CHANNEL, 3, 2)
    await store.insert_batch(Batch("dev", "b1", uid, header, header.fingerprint(),
                                   BatchStatus.RECEIVING, 0, 1))
    await store.start_submission(uid, header, 1)
    await store.insert_items(uid, 1, card_items(1, 9), 0)
    for n in range(3):
        await queue.queue_group(uid, BatchGroup(n + 1, "card", card_items(3 * n + 1, 3)), 2)
