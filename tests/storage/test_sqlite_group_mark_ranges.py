"""A group's mark on SQLite (sqlite/batch_item_rows.py, mark_processing)
writes a run of consecutive items as one seq range and any other group seq
by seq (its IN list filled up to a power of two with its last seq again):
either way exactly the group's items become PROCESSING in it, no
neighbour, and the batch's counts stay what a recount of its items gives."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from paygrid_server.domain.model.batch import (
    BatchGroup,
    BatchHeader,
    BatchItem,
    BatchItemStatus,
    GroupingPolicy,
)
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import Failure, FailureReason
from tests.support.sqlite_batch_store import batch_in_submission

UID = "bat_ranges"
ITEMS = 1_200  # more than a group's largest statement (1024 seqs)


def _item(seq: int) -> BatchItem:
    return BatchItem(seq, f"r{seq:04d}", f"payee {seq}", Money("EUR", 100 + seq), "card", None,
                     "card")


def _stored(path: Path) -> tuple[dict[int, tuple[str, int]], dict[str, int], dict[str, int]]:
    """Each item's (status, group_no) by seq; the counts kept; a recount."""
    with sqlite3.connect(path) as db:
        items = {seq: (status, group_no) for seq, status, group_no in db.execute(
            "SELECT seq, status, group_no FROM batch_items WHERE batch_key = "
            "(SELECT item_key FROM batches WHERE uid = ?)", (UID,))}
        kept = dict(zip(("RECEIVED", "PROCESSING", "SUCCEEDED", "FAILED", "UNKNOWN",
                         "REJECTED"), db.execute(
            "SELECT received, processing, succeeded, failed, unknown, rejected "
            "FROM batch_item_counts WHERE batch_uid = ?", (UID,)).fetchone()))
    recount = {status: 0 for status in kept}
    for status, _ in items.values():
        recount[status] += 1
    return items, kept, recount


@pytest.mark.parametrize("group_seqs", [
    pytest.param([3, 4, 5], id="a run"),
    pytest.param([12, 10, 11], id="a run out of order"),
    pytest.param(list(range(20, 281)), id="a run longer than a chunk"),
    pytest.param([7, 9], id="a gap"),
    pytest.param([4, 4, 6], id="a seq twice, as many as a run from 4 to 6"),
    pytest.param([*range(1, 4), *range(5, 281)], id="a gap in more than a chunk"),
    pytest.param([*range(1, 4), *range(5, 1_101)], id="a gap in more than one statement"),
    pytest.param([30, 31, 32], id="a run with a rejected item"),
])
async def test_exactly_the_groups_items_are_marked_and_counted(tmp_path: Path,
                                                               group_seqs: list[int]) -> None:
    path = tmp_path / "paygrid.sqlite3"
    header = BatchHeader("b1", "payer", GroupingPolicy.CHANNEL, 1_000, 4)
    async with batch_in_submission(path, UID, header) as store:
        items = [_item(seq) for seq in range(1, ITEMS + 1)]
        rejected = items[31 - 1]  # seq 31: rejected at intake, so not RECEIVED
        rejected.status = BatchItemStatus.REJECTED
        rejected.failure = Failure(FailureReason.INVALID_ITEM, "payee: too long")
        await store.insert_items(UID, 1, items, 0)
        by_seq = {item.seq: item for item in items}
        await store.mark_group_processing(UID, BatchGroup(
            7, "card", [by_seq[seq] for seq in group_seqs], started_at_us=10))

    stored, kept, recount = _stored(path)
    marked = set(group_seqs)
    assert {seq for seq, (_, group_no) in stored.items() if group_no == 7} == marked
    assert {seq for seq, (status, _) in stored.items() if status == "PROCESSING"} == marked
    assert all(stored[seq] in (("RECEIVED", 0), ("REJECTED", 0))
               for seq in set(stored) - marked)
    assert kept == recount
    assert kept["PROCESSING"] == len(marked)
