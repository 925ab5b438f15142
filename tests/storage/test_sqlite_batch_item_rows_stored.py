"""What SQLite stores for batch items is every column as the item holds it,
value and type, whichever statement wrote it: an item stored as it arrived
and a result with no failure are written with their unchanging columns as
SQL literals (sqlite/batch_item_inserts.py, sqlite/batch_item_rows.py),
the others with every column bound; both must store the same values."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from paygrid_server.domain.model.batch import (
    BatchGroup,
    BatchHeader,
    BatchItem,
    BatchItemStatus,
    GroupingPolicy,
)
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import Failure, FailureReason
from paygrid_server.storage.batch_rows import STORED_ITEM_COLUMNS, item_insert_row
from tests.support.sqlite_batch_store import batch_in_submission

UID = "bat_rows"
S = BatchItemStatus


def _item(seq: int) -> BatchItem:
    # Content the digest has to escape, and a requested time on some.
    return BatchItem(seq, f"r{seq:04d}", f'payée "{seq}"\\', Money("EUR", 100 + seq), "card",
                     1_700_000_000_000_000 + seq if seq % 3 == 0 else None, "card")


def _typed(row: tuple) -> list[tuple[object, type]]:
    return [(value, type(value)) for value in row]


def _as_held(item: BatchItem) -> list[tuple[object, type]]:
    """The row the item should have: every column as item_insert_row spells
    it, then the batch, the submission and the version."""
    return _typed((*item_insert_row(item), UID, 1, item.version))


async def test_rows_hold_each_item_as_it_is_whichever_statement_wrote_them(
        tmp_path: Path) -> None:
    path = tmp_path / "paygrid.sqlite3"
    header = BatchHeader("b1", "payer", GroupingPolicy.CHANNEL, 300, 4)
    async with batch_in_submission(path, UID, header) as store:
        items = [_item(seq) for seq in range(1, 301)]
        # Insert chunks of 256, 32, 8, 4: the 32 hold an item rejected at intake.
        rejected = items[270]
        rejected.status = S.REJECTED
        rejected.failure = Failure(FailureReason.INVALID_ITEM, "payee: too long")
        await store.insert_items(UID, 1, items, 0)

        # Group 1, 250 items all succeeded: the statement with the result's
        # unchanging columns as literals. Group 2, 10 items, one failed: every
        # column bound. Each is one statement filled up with its last row again
        # (to 256 and 16 rows); group 3, still PROCESSING, is the neighbour a
        # wrong filling row would change.
        groups = [BatchGroup(n, "card", items[start:end], started_at_us=10)
                  for n, (start, end) in enumerate([(0, 250), (250, 260), (260, 270)], 1)]
        for group in groups:
            for item in group.items:
                item.status, item.group_no = S.PROCESSING, group.group_no
            await store.mark_group_processing(UID, group)
        for item in items[:260]:
            item.status, item.channel_reference = S.SUCCEEDED, f"ch_{item.seq}"
            item.attempt = 2 if item.seq == 7 else 1
        failed = items[258]
        failed.status, failed.channel_reference = S.FAILED, ""
        failed.failure = Failure(FailureReason.DECLINED, "card declined", "05")
        for group in groups[:2]:
            group.completed_at_us = 20
            await store.save_group_results(UID, group)

    with sqlite3.connect(path) as db:
        rows = db.execute(f"SELECT {STORED_ITEM_COLUMNS}, "
                          "(SELECT uid FROM batches WHERE item_key = batch_key), "
                          "submission, version FROM batch_items ORDER BY seq").fetchall()
    assert [_typed(row) for row in rows] == [_as_held(item) for item in items]
    assert {row[8] for row in rows} == {"SUCCEEDED", "FAILED", "PROCESSING", "REJECTED",
                                        "RECEIVED"}
