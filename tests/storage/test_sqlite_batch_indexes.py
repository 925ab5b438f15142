"""SQLite's batch_items indexes: batch_items_by_group holds only items in a
group (partial, migrations/0011: an item is stored before its group
exists), and reading a group back still goes through it, not through every
item of the batch; batch_items_by_status holds only items in the statuses
read through it (partial, migrations/0012)."""

from __future__ import annotations

import sqlite3
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from paygrid_server.domain.model.batch import (
    Batch,
    BatchGroup,
    BatchHeader,
    BatchItem,
    BatchItemStatus,
    BatchStatus,
    GroupingPolicy,
)
from paygrid_server.domain.model.money import Money
from paygrid_server.storage.sqlite.batch_item_rows import GROUP_ITEMS_SQL, groups_as_stored
from paygrid_server.storage.sqlite.batch_store import (
    SqliteBatchStore, items_after_parameters, items_after_sql)
from paygrid_server.storage.sqlite.database import SqliteDatabase
from paygrid_server.transport.event_messages import ProtobufSnapshots

UID = "bat_idx"


def _item(seq: int) -> BatchItem:
    return BatchItem(seq, f"r{seq:04d}", f"payee_{seq}", Money("EUR", 100), "", None, "card")


@asynccontextmanager
async def _five_items(path: Path) -> AsyncIterator[tuple[SqliteBatchStore, list[BatchItem]]]:
    """A batch of five items stored RECEIVED in a new file at `path`."""
    database = await SqliteDatabase.open(path)
    try:
        store = SqliteBatchStore(database, ProtobufSnapshots())
        header = BatchHeader("b1", "payer", GroupingPolicy.CHANNEL, 100, 4)
        await store.insert_batch(Batch("dev", "b1", UID, header, header.fingerprint(),
                                       BatchStatus.RECEIVING, 0, 1))
        items = [_item(seq) for seq in range(1, 6)]
        await store.insert_items(UID, 1, items, 0)
        yield store, items
    finally:
        await database.close()


async def test_only_grouped_items_enter_by_group_and_a_group_reads_back_through_it(
        tmp_path: Path) -> None:
    path = tmp_path / "paygrid.sqlite3"
    async with _five_items(path) as (store, items):
        grouped = [items[3], items[1]]  # out of seq order: read back in seq order
        await store.mark_group_processing(UID, BatchGroup(7, "card", grouped, 10))

    with sqlite3.connect(path) as db:
        partial = {name: flag for _, name, _, _, flag in db.execute(
            "PRAGMA index_list(batch_items)")}
        assert partial["batch_items_by_group"] == 1
        plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {GROUP_ITEMS_SQL}", (UID, 7))]
        # The batch's key found once, by its uid, then the index.
        assert plan == ["SEARCH batch_items USING INDEX batch_items_by_group "
                        "(batch_key=? AND group_no=?)", "SCALAR SUBQUERY 1",
                        "SEARCH batches USING INDEX sqlite_autoindex_batches_1 (uid=?)"], plan
        [group] = groups_as_stored(db, UID, [7])
    assert [(i.seq, i.status, i.group_no) for i in group.items] == \
        [(2, BatchItemStatus.PROCESSING, 7), (4, BatchItemStatus.PROCESSING, 7)]
    assert (group.key, group.started_at_us) == ("card", 10)


async def test_by_status_holds_only_what_is_read_by_it_and_readers_use_it(
        tmp_path: Path) -> None:
    """batch_items_by_status is partial (migrations/0012): a RECEIVED or
    SUCCEEDED item, what every item of a batch that goes well is most of
    its life, has no entry; PROCESSING, FAILED, UNKNOWN, REJECTED items are
    read through it."""
    path = tmp_path / "paygrid.sqlite3"
    async with _five_items(path) as (store, items):
        await store.mark_group_processing(UID, BatchGroup(7, "card", items[:2], 10))
        assert [i.seq for i in await store.items_after(
            UID, 0, 10, (BatchItemStatus.RECEIVED, BatchItemStatus.PROCESSING))] == [1, 2, 3, 4, 5]

    with sqlite3.connect(path) as db:
        partial = {name: flag for _, name, _, _, flag in db.execute(
            "PRAGMA index_list(batch_items)")}
        assert partial["batch_items_by_status"] == 1
        entries = db.execute("SELECT count(*) FROM batch_items INDEXED BY batch_items_by_status "
                             "WHERE batch_key = (SELECT item_key FROM batches WHERE uid = ?) "
                             "AND status NOT IN ('RECEIVED', 'SUCCEEDED')",
                             (UID,)).fetchone()[0]
        assert entries == 2  # the two PROCESSING items only
        for status, uses_index in (("FAILED", True), ("UNKNOWN", True), ("PROCESSING", True),
                                   ("REJECTED", True), ("RECEIVED", False), ("SUCCEEDED", False)):
            plan = " ".join(row[3] for row in db.execute(
                f"EXPLAIN QUERY PLAN {items_after_sql((status,))}",
                items_after_parameters(UID, 0, 10, (status,))))
            assert ("USING INDEX batch_items_by_status" in plan) is uses_index, (status, plan)
