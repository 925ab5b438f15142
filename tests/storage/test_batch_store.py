"""Both BatchStores (SQLite, PostgreSQL) write items a chunk per statement:
every item still gets its own state, whatever the chunk sizes, and reads
follow the indexes. Each test runs on both engines."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from paygrid_server.transport.event_messages import ProtobufSnapshots
from paygrid_server.domain.model.batch import (
    Batch,
    BatchGroup,
    BatchHeader,
    BatchItem,
    BatchItemStatus,
    BatchStatus,
    GroupingPolicy,
)
from paygrid_server.domain.model.fingerprint import fingerprint
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import Failure, FailureReason
from paygrid_server.domain.ports.batch_store import BatchStore
from paygrid_server.storage.postgres import batch_sql as postgres_batch_sql
from paygrid_server.storage.postgres.batch_store import PostgresBatchStore
from paygrid_server.storage.postgres.database import PostgresDatabase, PostgresLimits
from paygrid_server.storage.sqlite.batch_item_rows import chunks as _chunks
from paygrid_server.storage.sqlite.batch_store import SqliteBatchStore
from paygrid_server.storage.sqlite.database import SqliteDatabase
from tests.support.batch_counts_check import assert_counts_match_items

UID = "bat_test"
S = BatchItemStatus


@pytest.fixture
async def store(tmp_path: Path, storage_engine: str, postgres_databases, monkeypatch):
    if storage_engine == "postgresql":
        # Small chunks, so a few hundred items take several statements.
        monkeypatch.setattr(postgres_batch_sql, "CHUNK_ROWS", 128)
        database = await PostgresDatabase.open(await postgres_databases.create(),
                                               PostgresLimits(pool_max_connections=2))
        store = PostgresBatchStore(database, ProtobufSnapshots())
    else:
        database = await SqliteDatabase.open(tmp_path / "paygrid.sqlite3")
        store = SqliteBatchStore(database, ProtobufSnapshots())
    header = BatchHeader("b1", "payer", GroupingPolicy.CHANNEL, 100, 4)
    await store.insert_batch(Batch("dev", "b1", UID, header, header.fingerprint(),
                                   BatchStatus.RECEIVING, 0, 1))
    yield store
    await database.close()


def _item(seq: int, reference: str | None = None, amount_minor: int = 100) -> BatchItem:
    reference = reference or f"r{seq:04d}"
    return BatchItem(seq, reference, f"payee_{reference}", Money("EUR", amount_minor), "",
                     None, "card")


async def _stored(store: BatchStore) -> dict[int, BatchItem]:
    return {i.seq: i for i in await store.items_after(UID, 0, 10_000)}


def test_chunks_come_in_few_sizes() -> None:
    assert [len(c) for c in _chunks(range(1_000))] == [256, 256, 256, 128, 64, 32, 8]
    assert [len(c) for c in _chunks(range(3))] == [2, 1]
    assert [x for c in _chunks(range(777)) for x in c] == list(range(777))
    assert list(_chunks([])) == []


async def test_group_marked_then_saved_item_by_item(store: BatchStore) -> None:
    items = [_item(seq) for seq in range(1, 301)]  # more than one chunk on either engine
    await store.start_submission(UID, BatchHeader("b1", "payer", GroupingPolicy.CHANNEL, 300, 1), 1)
    outcome = await store.insert_items(UID, 1, items, 0)
    assert [i.seq for i in outcome.new] == list(range(1, 301))
    group = BatchGroup(7, "card", items, started_at_us=10)
    for item in items:
        item.status, item.group_no = S.PROCESSING, 7
    await store.mark_group_processing(UID, group)
    assert {(i.status, i.group_no) for i in (await _stored(store)).values()} == {(S.PROCESSING, 7)}

    for item in items:
        item.status, item.channel_reference = S.SUCCEEDED, f"ch_{item.seq}"
    items[4].status = S.FAILED
    items[4].failure = Failure(FailureReason.INSUFFICIENT_FUNDS, "no funds",
                               "insufficient_funds")
    items[299].status = S.UNKNOWN
    items[299].failure = Failure(FailureReason.OUTCOME_UNKNOWN, "no answer")
    group.completed_at_us = 25
    await store.save_group_results(UID, group)
    stored = await _stored(store)
    assert [stored[i.seq] for i in items] == items
    assert await store.group_processing_us(UID) == [15]
    counts = await store.counts(UID)
    assert (counts.succeeded, counts.failed, counts.pending) == (298, 1, 1)


async def test_marking_keeps_what_an_item_was_stored_with(store: BatchStore) -> None:
    # A fenced item back to RECEIVED under a new attempt keeps its attempt
    # and last failure when it is grouped again.
    items = [_item(1), _item(2)]
    await store.insert_items(UID, 1, items, 0)
    items[1].attempt, items[1].group_no = 2, 3
    items[1].failure = Failure(FailureReason.OUTCOME_UNKNOWN, "no answer")
    await store.save_items(UID, items[1:])
    regrouped = await store.items_after(UID, 0, 10, (S.RECEIVED,))
    assert regrouped == items
    for item in regrouped:
        item.status, item.group_no = S.PROCESSING, 4
    await store.mark_group_processing(UID, BatchGroup(4, "card", regrouped, started_at_us=1))
    assert list((await _stored(store)).values()) == regrouped


async def test_items_after_merges_statuses_in_seq_order(store: BatchStore) -> None:
    items = [_item(seq) for seq in range(1, 21)]
    for item in items:
        item.status = (S.PROCESSING, S.UNKNOWN, S.SUCCEEDED, S.RECEIVED)[item.seq % 4]
    await store.insert_items(UID, 1, items, 0)
    wanted = [i.seq for i in items if i.status in (S.PROCESSING, S.UNKNOWN)]
    both = (S.PROCESSING, S.UNKNOWN)
    assert [i.seq for i in await store.items_after(UID, 0, 100, both)] == wanted
    assert [i.seq for i in await store.items_after(UID, 5, 3, both)] == [
        s for s in wanted if s > 5][:3]
    assert [i.seq for i in await store.items_after(UID, 0, 100, (S.UNKNOWN, S.UNKNOWN))] == [
        i.seq for i in items if i.status is S.UNKNOWN]
    assert [i.seq for i in await store.items_after(UID, 15, 100)] == [16, 17, 18, 19, 20]


async def test_a_reference_taken_once_per_submission(store: BatchStore) -> None:
    first = await store.insert_items(UID, 1, [_item(1, "a"), _item(2, "b"), _item(3, "a")], 0)
    assert [i.reference for i in first.new] == ["a", "b"]
    assert [(r.reference, r.failure.reason) for r in first.refused] == [
        ("a", FailureReason.DUPLICATE_REFERENCE)]
    # Resubmitted: a resend is taken once, a second copy in the same call
    # is a duplicate, other content is a conflict.
    again = await store.insert_items(UID, 2, [
        _item(4, "a"), _item(5, "a"), _item(6, "b", amount_minor=999), _item(7, "c")], 0)
    assert [i.reference for i in again.resent] == ["a"]
    assert [i.reference for i in again.new] == ["c"]
    assert [(r.reference, r.failure.reason) for r in again.refused] == [
        ("a", FailureReason.DUPLICATE_REFERENCE), ("b", FailureReason.REFERENCE_CONFLICT)]
    later = await store.insert_items(UID, 2, [_item(8, "a"), _item(9, "b")], 0)
    assert [(r.reference, r.failure.reason) for r in later.refused] == [
        ("a", FailureReason.DUPLICATE_REFERENCE)]
    assert [i.reference for i in later.resent] == ["b"]  # now with its first content
    assert (await store.counts(UID)).total == 3 + 4  # stored, and refused (not stored)


@pytest.mark.parametrize("changed", [
    dict(payee="payee_other"), dict(amount=Money("EUR", 101)), dict(amount=Money("USD", 100)),
    dict(requested_channel="card"), dict(requested_at_us=1_700_000_000_000_000),
    dict(requested_at_us=0)])
async def test_a_reference_resent_with_any_other_content_is_a_conflict(
        store: BatchStore, changed: dict) -> None:
    first = replace(_item(1, "a"), requested_at_us=None)
    await store.insert_items(UID, 1, [first, _item(2, "b")], 0)
    again = await store.insert_items(UID, 2, [replace(_item(3, "a"), **changed),
                                              replace(_item(4, "b"), channel="wallet")], 0)
    assert [(r.reference, r.failure.reason) for r in again.refused] == [
        ("a", FailureReason.REFERENCE_CONFLICT)]
    # Where it is charged is not content: routing may differ on resubmission.
    assert [(i.reference, i.seq, i.channel) for i in again.resent] == [("b", 2, "card")]
    assert again.new == []


@pytest.mark.postgresql_only
async def test_postgresql_still_stores_each_items_content_digest(store: BatchStore) -> None:
    """Replicas of the release before migration 0013 compare an item's
    digest when it is resent, and a rolling update runs them beside this
    one: each item is stored with the digest they take."""
    items = [_item(1, "a"), replace(_item(2, "b"), requested_at_us=1_700_000_000_000_000)]
    await store.insert_items(UID, 1, items, 0)
    rows = await store._database.read(
        "fetch", "SELECT reference, content_digest FROM batch_items ORDER BY seq")
    assert [tuple(row) for row in rows] == [
        (i.reference, fingerprint([i.payee, "EUR", 100, "", i.requested_at_us])) for i in items]


@pytest.mark.postgresql_only
async def test_the_sweep_leaves_a_batch_between_its_insert_and_its_first_submission(
        store: BatchStore) -> None:
    """A batch just stored, not started (submissions 0, no submission lease):
    a replica is about to take it. The sweep used to mark it INTERRUPTED
    there (GetBatch and its events said so for a live batch). One stored
    longer ago than the grace (the fixture's, created at 1 µs) is swept."""
    from paygrid_server.domain.model import clock

    header = BatchHeader("fresh", "payer", GroupingPolicy.CHANNEL, 100, 4)
    await store.insert_batch(Batch("dev", "fresh", "bat_fresh", header, header.fingerprint(),
                                   BatchStatus.RECEIVING, 0, clock.now_us()))
    assert await store.interrupt_abandoned() == 1  # the fixture's old one only
    assert (await store.get_batch_by_uid("bat_fresh")).status is BatchStatus.RECEIVING
    assert (await store.get_batch_by_uid(UID)).status is BatchStatus.INTERRUPTED


async def _batch_events(store: BatchStore) -> list[tuple[str, int]]:
    """(type, version) of the batch's events, as stored."""
    sql = "SELECT type, aggregate_version FROM events ORDER BY aggregate_version"
    if isinstance(store, PostgresBatchStore):
        rows = await store._database.read("fetch", sql)
    else:
        rows = await store._reader.execute_fetchall(sql)
    return [(t.removeprefix("io.paygrid.").removesuffix(".v1"), v) for t, v in rows]


async def test_a_group_saved_again_reports_only_what_changed(store: BatchStore) -> None:
    """A retried save of a group's results (a crash after its commit, a
    writer retrying) changes nothing and writes no event; a later save that
    settles an item reports that group again."""
    items = [_item(seq) for seq in range(1, 4)]
    await store.insert_items(UID, 1, items, 0)
    for item in items:
        item.status, item.group_no = S.PROCESSING, 2
    group = BatchGroup(2, "card", items, started_at_us=10)
    await store.mark_group_processing(UID, group)
    items[0].status, items[1].status = S.SUCCEEDED, S.SUCCEEDED
    items[2].status = S.UNKNOWN
    items[2].failure = Failure(FailureReason.OUTCOME_UNKNOWN, "no answer")
    group.completed_at_us = 20
    await store.save_group_results(UID, group)
    told = [("batch.created", 1), ("batch.item.unknown", 2), ("batch.group.completed", 3)]
    assert await _batch_events(store) == told
    assert [i.version for i in (await _stored(store)).values()] == [3, 3, 2]

    await store.save_group_results(UID, group)  # the same results again
    await store.save_items(UID, items)
    assert await _batch_events(store) == told
    assert (await store.get_batch_by_uid(UID)).version == 3

    # The unknown item settled (succeeded): its group is told again, alone.
    settled = (await _stored(store))[3]
    settled.status, settled.failure, settled.channel_reference = S.SUCCEEDED, None, "ch_3"
    await store.save_items(UID, [settled])
    assert await _batch_events(store) == [*told, ("batch.group.completed", 4)]
    assert [i.version for i in (await _stored(store)).values()] == [4, 4, 4]
    assert (await store.get_batch_by_uid(UID)).version == 4


async def _counts(store: BatchStore) -> tuple[int, int, int, int, int, int]:
    c = await store.counts(UID)
    return c.total, c.succeeded, c.failed, c.rejected, c.pending, c.total - c.pending


def _recount_matches(store: BatchStore, tmp_path: Path) -> None:
    """SQLite keeps its counts in a table (migrations/0012): equal to the
    items counted, after every kind of write."""
    if isinstance(store, SqliteBatchStore):
        assert assert_counts_match_items(tmp_path / "paygrid.sqlite3") == 1


async def test_counts_follow_every_write_even_of_items_not_as_expected(
        store: BatchStore, tmp_path: Path) -> None:
    # 300 items: more than one chunk on either engine. Stored RECEIVED but
    # one REJECTED as sent; unstored rejections count too.
    items = [_item(seq) for seq in range(1, 301)]
    items[9].status = S.REJECTED
    items[9].failure = Failure(FailureReason.INVALID_ITEM, "bad")
    await store.insert_items(UID, 1, items, 2)
    assert await _counts(store) == (302, 0, 0, 3, 299, 3)
    _recount_matches(store, tmp_path)

    # A group holding items that are not RECEIVED (the rejected one, and one
    # a save made FAILED): the mark's count cannot assume what they were.
    items[19].status = S.FAILED
    items[19].failure = Failure(FailureReason.INSUFFICIENT_FUNDS, "no", "insufficient_funds")
    await store.save_items(UID, [items[19]])
    group = BatchGroup(1, "card", items[:200], started_at_us=10)
    for item in group.items:
        item.status, item.group_no = S.PROCESSING, 1
    await store.mark_group_processing(UID, group)
    assert await _counts(store) == (302, 0, 0, 2, 300, 2)  # all 200 PROCESSING now
    _recount_matches(store, tmp_path)

    # One of them settled before the group's results (SUCCEEDED): those
    # results then find it not PROCESSING.
    items[0].status, items[0].channel_reference = S.SUCCEEDED, "ch_settled"
    await store.save_items(UID, [items[0]])
    for item in group.items:
        item.status, item.channel_reference = S.SUCCEEDED, f"ch_{item.seq}"
    items[5].status = S.UNKNOWN
    items[5].failure = Failure(FailureReason.OUTCOME_UNKNOWN, "no answer")
    group.completed_at_us = 20
    await store.save_group_results(UID, group)
    assert await _counts(store) == (302, 199, 0, 2, 101, 201)
    _recount_matches(store, tmp_path)

    # A group whose results are all one status, one of its items settled
    # (FAILED) before them: the UPDATE moves the others, and the count knows
    # which without undoing it.
    third = BatchGroup(3, "card", items[250:260], started_at_us=25)
    for item in third.items:
        item.status, item.group_no = S.PROCESSING, 3
    await store.mark_group_processing(UID, third)
    items[250].status = S.FAILED
    items[250].failure = Failure(FailureReason.INSUFFICIENT_FUNDS, "no", "insufficient_funds")
    await store.save_items(UID, [items[250]])
    for item in third.items:
        item.status, item.failure, item.channel_reference = S.SUCCEEDED, None, f"ch_{item.seq}"
    third.completed_at_us = 26
    await store.save_group_results(UID, third)
    assert await _counts(store) == (302, 209, 0, 2, 91, 211)
    _recount_matches(store, tmp_path)

    # A second group, every item as expected; then the rest rejected.
    second = BatchGroup(2, "card", items[200:250], started_at_us=30)
    for item in second.items:
        item.status, item.group_no = S.PROCESSING, 2
    await store.mark_group_processing(UID, second)
    for item in second.items:
        item.status = S.FAILED
        item.failure = Failure(FailureReason.INSUFFICIENT_FUNDS, "no", "insufficient_funds")
    second.completed_at_us = 40
    await store.save_group_results(UID, second)
    assert await store.reject_waiting_items(
        UID, Failure(FailureReason.CONTROL_TOTALS_MISMATCH, "totals")) == 40
    assert await _counts(store) == (302, 209, 50, 42, 1, 301)
    _recount_matches(store, tmp_path)
