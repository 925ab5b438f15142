"""Settling batch items a crash (or an unanswered call) left with no known
outcome: PROCESSING (their charge was on its way) or UNKNOWN.

Each item's channel is asked first and what it made is adopted; a charge
it never made is sent again under the item's same key (the channel replays
a charge already made, so nothing is charged twice). Only a key the channel
answered nothing about is fenced by a Void, and the item charged again
later under a new attempt key. Used by a resubmission (resume.py) and by
a replica taking over a dead one's group (workers.py).
"""

from __future__ import annotations

import asyncio

from paygrid_server.domain.model import limits
from paygrid_server.domain.model.batch import Batch, BatchItem, BatchItemStatus
from paygrid_server.domain.batches.failure_policy import GroupReversal
from paygrid_server.domain.batches.group_charging import GroupCharger
from paygrid_server.domain.charging.channel_charge import ChargeOrder
from paygrid_server.domain.charging.settlement import ChargeSettlement


def charge_order(batch: Batch, item: BatchItem) -> ChargeOrder:
    return ChargeOrder(item.channel_key(batch.uid), batch.header.payer, item.payee, item.amount,
                       item.reference)


async def settle_interrupted(settlement: ChargeSettlement, batch: Batch,
                             items: list[BatchItem]) -> list[BatchItem]:
    """Gives each item the channel's outcome for its key (made before, or
    now); returns the items whose key was fenced: not charged, they go back
    to RECEIVED under the next attempt number, for the caller to place in
    a group. An item the channel could not be reached about stays UNKNOWN."""
    gate = asyncio.Semaphore(limits.BATCH_ITEM_CONCURRENCY_PER_GROUP)
    fenced: list[BatchItem] = []

    async def settle(item: BatchItem) -> None:
        async with gate:
            record = await settlement.charge_again(item.channel, charge_order(batch, item))
        if record is None:
            item.status = BatchItemStatus.UNKNOWN
        elif record.fenced:
            item.status, item.attempt = BatchItemStatus.RECEIVED, item.attempt + 1
            item.failure, item.channel_reference = None, ""
            fenced.append(item)
        else:
            GroupCharger.apply(item, record)

    await asyncio.gather(*(settle(item) for item in items))
    return fenced


async def settle_interrupted_group(settlement: ChargeSettlement, batch: Batch,
                                   items: list[BatchItem]) -> None:
    """ALL_OR_NOTHING_PER_GROUP: the items a crash left mid-charge in one
    group no live worker holds (SQLite). Settled as above; the group stands
    when every item holds its charge, and is reversed whole when one failed
    (a charge that must not stand). If the channel fenced a key (it
    answered a Void but no Charge), the rest is reversed and the whole
    group charged again as a new group under new attempt keys."""
    reversal = GroupReversal(settlement, batch.uid)
    fenced = {id(item) for item in await settle_interrupted(settlement, batch, items)}
    if fenced:
        await reversal.restart([item for item in items if id(item) not in fenced])
        for item in items:
            if item.status is BatchItemStatus.RECEIVED:
                item.group_no = 0  # grouped again, as a new group
    else:
        await reversal.keep_items_whole(items, items[0].group_no)
