"""A lone server's group queue marks the batch's next group PROCESSING in
the transaction that stores a group's results (storage/single_process_group_queue.py,
"marked ahead"): on a real SQLite file, each step driven by the test. The
batch (tests/support/queued_batch.py): 9 items in groups 1-3, parallelism 2."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from paygrid_server.domain.model.batch import BatchGroup, BatchItemStatus
from paygrid_server.domain.ports.group_queue import GroupLease
from paygrid_server.storage.sqlite.batch_store import SqliteBatchStore
from paygrid_server.storage.sqlite.database import SqliteDatabase
from paygrid_server.storage.sqlite.lone_server_group_queue import LoneServerGroupQueue
from paygrid_server.transport.event_messages import ProtobufSnapshots
from tests.support.batch_counts_check import assert_counts_match_items
from tests.support.queued_batch import queue_three_groups

pytestmark = pytest.mark.sqlite_only

UID = "bat_ahead"
LEASE_MS = 1_000
S = BatchItemStatus


@pytest.fixture
async def lone_with(tmp_path: Path):
    """Builds (the queue, its store, the file), groups 1 and 2 claimed; the
    store's combined write (results + next mark) wrapped by `wrap` first, as
    the queue is given it when it is made."""
    opened: list[SqliteDatabase] = []

    async def build(wrap=None):
        path = tmp_path / "paygrid.sqlite3"
        database = await SqliteDatabase.open(path)
        opened.append(database)
        store = SqliteBatchStore(database, ProtobufSnapshots())
        if wrap is not None:
            store.save_group_results_then_mark = wrap(store.save_group_results_then_mark)
        queue = LoneServerGroupQueue(store, database)
        await queue_three_groups(store, queue, UID)
        assert [(await queue.claim_group("me", LEASE_MS)).group_no for _ in range(2)] == [1, 2]
        return queue, store, path

    yield build
    for database in opened:
        await database.close()


@pytest.fixture
async def lone(lone_with):
    """(the queue, its store, the file), groups 1 and 2 claimed."""
    return await lone_with()


def _items_as_stored(path: Path) -> dict[int, tuple[str, int]]:
    with sqlite3.connect(path) as db:
        return {seq: (status, group_no) for seq, status, group_no in db.execute(
            "SELECT seq, status, group_no FROM batch_items ORDER BY seq")}


def _group_rows(path: Path) -> dict[int, tuple[int, int | None]]:
    with sqlite3.connect(path) as db:
        return {no: (started, completed) for no, started, completed in db.execute(
            "SELECT group_no, started_at_us, completed_at_us FROM batch_groups")}


async def _started(queue: LoneServerGroupQueue, group_no: int, at_us: int) -> BatchGroup:
    """What GroupSteps.process does before the charge: items PROCESSING, marked."""
    group = BatchGroup(group_no, "card", await queue.group_items(UID, group_no),
                       started_at_us=at_us)
    for item in group.items:
        item.status = S.PROCESSING
    assert await queue.mark_group_processing(UID, group)
    return group


def _charged(group: BatchGroup, completed_at_us: int) -> BatchGroup:
    for item in group.items:
        item.status, item.channel_reference = S.SUCCEEDED, f"ch_{item.seq}"
    group.completed_at_us = completed_at_us
    return group


async def _group_3_claimed_while_group_1_is_saved(queue: LoneServerGroupQueue,
                                                  reached: asyncio.Event) -> asyncio.Task:
    """Groups 1 and 2 started; group 1's results (carrying group 3's mark)
    on their way until the held write sets `reached`; group 2's saved
    meanwhile, a plain save (group 3 is being marked), which frees the slot
    group 3 is claimed into. Returns group 1's saving."""
    first = await _started(queue, 1, at_us=10)
    second = await _started(queue, 2, at_us=11)
    saving = asyncio.create_task(
        queue.save_group_results(UID, _charged(first, 20), next_may_start=True))
    await reached.wait()
    assert await queue.save_group_results(UID, _charged(second, 21), next_may_start=True)
    assert (await queue.claim_group("me", LEASE_MS)).group_no == 3
    return saving


def _refuse_marks(store: SqliteBatchStore, monkeypatch) -> None:
    async def refused(batch_uid: str, group: BatchGroup) -> None:
        raise AssertionError(f"group {group.group_no} marked on its own")

    monkeypatch.setattr(store, "mark_group_processing", refused)


async def test_a_groups_results_mark_the_next_group_which_then_writes_no_mark(
        lone, monkeypatch) -> None:
    queue, store, path = lone
    first = await _started(queue, 1, at_us=10)
    await _started(queue, 2, at_us=11)
    assert _items_as_stored(path)[7] == ("RECEIVED", 0)  # group 3 waits, unclaimed

    assert await queue.save_group_results(UID, _charged(first, 20), next_may_start=True)
    # Group 3 is not claimed yet, and its items are stored PROCESSING in it.
    assert {seq: _items_as_stored(path)[seq] for seq in (7, 8, 9)} == {
        seq: ("PROCESSING", 3) for seq in (7, 8, 9)}
    assert 3 in _group_rows(path)

    lease = await queue.claim_group("me", LEASE_MS)
    assert isinstance(lease, GroupLease) and lease.group_no == 3
    _refuse_marks(store, monkeypatch)  # its mark is stored: writing it again would fail
    third = await _started(queue, 3, at_us=30)
    assert await queue.save_group_results(UID, _charged(third, 45), next_may_start=True)

    # Its processing time counts from its claim (30), not from the mark.
    assert _group_rows(path)[3] == (30, 45)
    assert _group_rows(path)[1] == (10, 20)
    assert {seq: _items_as_stored(path)[seq][0] for seq in (1, 2, 3, 7, 8, 9)} == {
        seq: "SUCCEEDED" for seq in (1, 2, 3, 7, 8, 9)}
    assert_counts_match_items(path)


@pytest.mark.parametrize("stop", ["policy", "stops_batch", "stopped"])
async def test_a_batch_that_may_stop_marks_nothing_ahead(lone, stop) -> None:
    """A STOP_ON_FIRST_FAILURE batch (GroupSteps passes next_may_start=False),
    a group that stops its batch, or a batch stopped already: the next group
    stays RECEIVED and ungrouped until it is claimed (or skipped)."""
    queue, _, path = lone
    first = await _started(queue, 1, at_us=10)
    if stop == "stopped":
        await queue.stop_batch(UID, "item 'r0004' failed")
    assert await queue.save_group_results(
        UID, _charged(first, 20), next_may_start=stop != "policy",
        stops_batch="item 'r0001' failed" if stop == "stops_batch" else None)
    assert {seq: _items_as_stored(path)[seq] for seq in (7, 8, 9)} == {
        seq: ("RECEIVED", 0) for seq in (7, 8, 9)}
    assert 3 not in _group_rows(path)


async def test_a_next_group_claimed_while_its_mark_is_being_written_waits_for_it(
        lone_with, monkeypatch) -> None:
    """Group 1's results (and group 3's mark) held at the writer; group 2
    finishes meanwhile and frees the slot group 3 is claimed into. Group 3's
    own mark may only return once the write carrying it is committed."""
    order: list[str] = []
    reached, release = asyncio.Event(), asyncio.Event()

    def holding(both):
        async def held(batch_uid: str, done: BatchGroup, then: BatchGroup) -> None:
            reached.set()
            await release.wait()
            await both(batch_uid, done, then)
            order.append("group 3 marked with group 1's results")
        return held

    queue, store, path = await lone_with(holding)
    saving = await _group_3_claimed_while_group_1_is_saved(queue, reached)
    _refuse_marks(store, monkeypatch)

    async def mark_third() -> None:
        await _started(queue, 3, at_us=30)
        order.append("group 3's own mark returned")

    marking = asyncio.create_task(mark_third())
    for _ in range(10):  # loop turns only: nothing here waits for time
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(saving, marking)
    assert order == ["group 3 marked with group 1's results", "group 3's own mark returned"]
    assert _items_as_stored(path)[7] == ("PROCESSING", 3)


async def test_when_the_write_carrying_a_mark_fails_the_next_group_marks_itself(
        lone_with) -> None:
    def failing(both):
        async def fails(batch_uid: str, done: BatchGroup, then: BatchGroup) -> None:
            raise sqlite3.OperationalError("disk I/O error")
        return fails

    queue, _, path = await lone_with(failing)
    first = await _started(queue, 1, at_us=10)
    await _started(queue, 2, at_us=11)
    with pytest.raises(sqlite3.OperationalError):
        await queue.save_group_results(UID, _charged(first, 20), next_may_start=True)
    assert {seq: _items_as_stored(path)[seq] for seq in (1, 7)} == {
        1: ("PROCESSING", 1), 7: ("RECEIVED", 0)}  # neither write was stored

    await queue.release_group_lease(GroupLease(UID, 1, "card", "me", 1))  # group 1 given up
    assert (await queue.claim_group("me", LEASE_MS)).group_no == 3
    await _started(queue, 3, at_us=30)
    assert {seq: _items_as_stored(path)[seq] for seq in (7, 8, 9)} == {
        seq: ("PROCESSING", 3) for seq in (7, 8, 9)}
    assert_counts_match_items(path)


async def test_a_next_group_waiting_on_a_write_that_fails_marks_itself(lone_with) -> None:
    """Group 3 claimed while group 1's write (carrying its mark) is held, and
    that write then fails: group 3's mark, waiting on it, is written by group 3."""
    reached, release = asyncio.Event(), asyncio.Event()

    def failing_when_released(both):
        async def fails(batch_uid: str, done: BatchGroup, then: BatchGroup) -> None:
            reached.set()
            await release.wait()
            raise sqlite3.OperationalError("disk I/O error")
        return fails

    queue, _, path = await lone_with(failing_when_released)
    saving = await _group_3_claimed_while_group_1_is_saved(queue, reached)
    marking = asyncio.create_task(_started(queue, 3, at_us=30))
    for _ in range(10):  # loop turns only: group 3's mark now waits on group 1's write
        await asyncio.sleep(0)
    release.set()
    with pytest.raises(sqlite3.OperationalError):
        await saving
    await marking
    assert {seq: _items_as_stored(path)[seq] for seq in (1, 7, 8, 9)} == {
        1: ("PROCESSING", 1), 7: ("PROCESSING", 3), 8: ("PROCESSING", 3), 9: ("PROCESSING", 3)}
    assert_counts_match_items(path)
