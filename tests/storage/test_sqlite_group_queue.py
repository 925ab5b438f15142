"""The durable group queue on SQLite (storage/sqlite/group_queue.py), as
`serve --workers N` uses it: two SqliteDatabase instances on one real file,
each with its own writer thread and connections, stand for two worker
processes. The queue's clock is set by the test, so each side of a lease's
end is reached exactly, never waited for."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from paygrid_server.domain.model.batch import BatchGroup, BatchItemStatus
from paygrid_server.domain.ports.group_queue import GroupLease
from paygrid_server.storage.database_lock import DatabaseLock
from paygrid_server.storage.sqlite import group_queue as group_queue_module
from paygrid_server.storage.sqlite.batch_store import SqliteBatchStore
from paygrid_server.storage.sqlite.database import SqliteDatabase
from paygrid_server.storage.sqlite.group_queue import SqliteGroupQueue
from paygrid_server.storage.sqlite.lone_server_group_queue import LoneServerGroupQueue
from paygrid_server.transport.event_messages import ProtobufSnapshots
from tests.support.queued_batch import card_items, queue_three_groups

pytestmark = pytest.mark.sqlite_only

UID = "bat_q"
LEASE_MS = 1_000
T0 = 1_000_000_000_000  # µs: the test's clock starts here
S = BatchItemStatus


class Clock:
    def __init__(self) -> None:
        self.now_us = T0

    def __call__(self) -> int:
        return self.now_us


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(group_queue_module, "_now_us", clock)
    return clock


_SUPERVISOR_LOCKS: dict[Path, DatabaseLock] = {}


async def _worker_database(path: Path) -> SqliteDatabase:
    """A worker's database: held, as under `serve --workers N`, by a copy of
    its supervisor's lock on the file (the `workers` fixture takes it)."""
    return await SqliteDatabase.open(path, os.dup(_SUPERVISOR_LOCKS[path].fd))


@pytest.fixture
async def workers(tmp_path: Path, clock: Clock):
    """(queue of worker A, queue of worker B, A's batch store, the file);
    batch UID with parallelism 2 and groups 1-3 queued (3 items each)."""
    path = tmp_path / "paygrid.sqlite3"
    _SUPERVISOR_LOCKS[path] = DatabaseLock.take(path)
    a, b = await _worker_database(path), await _worker_database(path)
    snapshots = ProtobufSnapshots()
    store = SqliteBatchStore(a, snapshots)
    qa, qb = SqliteGroupQueue(a, snapshots), SqliteGroupQueue(b, snapshots)
    await queue_three_groups(store, qa, UID)
    yield qa, qb, store, path
    await a.close()
    await b.close()
    _SUPERVISOR_LOCKS.pop(path).release()


def _rows(path: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql, params).fetchall()


async def _group_1_mid_charge(queue: SqliteGroupQueue) -> tuple[GroupLease, BatchGroup]:
    """Group 1 claimed by worker A, its items stored PROCESSING."""
    lease = await queue.claim_group("A", LEASE_MS)
    group = BatchGroup(1, "card", await queue.group_items(UID, 1), started_at_us=5)
    for item in group.items:
        item.status = S.PROCESSING
    assert await queue.mark_group_processing(UID, group, lease)
    return lease, group


async def test_a_live_workers_group_is_never_claimed_by_another(workers, clock) -> None:
    qa, qb, _, path = workers
    first = await qa.claim_group("A", LEASE_MS)
    assert (first.group_no, first.token, first.taken_over) == (1, 1, False)
    # B gets another group, never A's; then the batch's parallelism (2) is used up.
    second = await qb.claim_group("B", LEASE_MS)
    assert (second.group_no, second.owner) == (2, "B")
    assert await qa.claim_group("A", LEASE_MS) is None
    assert await qb.claim_group("B", LEASE_MS) is None
    # Up to the last µs of A's lease, its group stays A's (B's too).
    clock.now_us = T0 + LEASE_MS * 1_000
    assert await qb.claim_group("B", LEASE_MS) is None
    assert _rows(path, "SELECT group_no, lease_owner, lease_count FROM batch_groups "
                 "WHERE status = 'LEASED' ORDER BY 1") == [(1, "A", 1), (2, "B", 1)]


async def test_an_expired_lease_is_taken_over_and_fences_its_old_holder(workers, clock) -> None:
    qa, qb, store, path = workers
    lease, group = await _group_1_mid_charge(qa)
    clock.now_us = T0 + LEASE_MS * 1_000 + 1  # one µs past A's lease
    taken = await qb.claim_group("B", LEASE_MS)
    assert (taken.group_no, taken.token, taken.taken_over) == (1, 2, True)
    # A's writes under its old lease fail and write nothing.
    assert not await qa.renew_group_lease(lease, LEASE_MS)
    for item in group.items:
        item.status, item.channel_reference = S.SUCCEEDED, "ch_a"
    group.completed_at_us = 9
    assert not await qa.save_items(UID, group.items, lease)
    assert not await qa.mark_group_processing(UID, group, lease)
    assert not await qa.save_group_results(UID, group, lease)
    await qa.release_group_lease(lease)  # a stale release leaves B's lease alone
    assert _rows(path, "SELECT status, lease_owner, lease_count, completed_at_us FROM "
                 "batch_groups WHERE group_no = 1") == [("LEASED", "B", 2, None)]
    assert {i.status for i in await qb.group_items(UID, 1)} == {S.PROCESSING}
    # B, the holder, stores the results: DONE once, processed by B.
    assert await qb.renew_group_lease(taken, LEASE_MS)
    assert await qb.save_group_results(UID, group, taken)
    assert [(d.group_no, d.processed_by) for d in await qa.done_groups(UID, [1, 2, 3])] == \
        [(1, "B")]
    assert await qa.unfinished_groups(UID) == [2, 3]
    assert {(i.status, i.channel_reference) for i in await qa.group_items(UID, 1)} == \
        {(S.SUCCEEDED, "ch_a")}


async def test_a_renewed_lease_outlives_its_first_expiry(workers, clock) -> None:
    qa, qb, _, path = workers
    lease = await qa.claim_group("A", LEASE_MS)
    clock.now_us = T0 + LEASE_MS * 1_000  # A's lease's last µs: renewed in time
    assert await qa.renew_group_lease(lease, LEASE_MS)
    clock.now_us += 1
    assert (await qb.claim_group("B", LEASE_MS)).group_no == 2  # not A's group 1
    clock.now_us = T0 + 2 * LEASE_MS * 1_000 + 1  # past the renewed lease
    taken = await qb.claim_group("B", LEASE_MS)
    assert (taken.group_no, taken.token) == (1, 2)
    assert _rows(path, "SELECT lease_owner FROM batch_groups WHERE group_no = 1") == [("B",)]


async def test_a_dead_workers_leases_expire_at_once(workers, clock) -> None:
    qa, qb, _, path = workers
    assert await qa.acquire_submission(UID, "A", LEASE_MS)
    lease = await qa.claim_group("A", LEASE_MS)
    assert not await qb.acquire_submission(UID, "B", LEASE_MS)
    assert await qb.expire_leases_of("C") == 0  # another worker's leases stay
    assert await qb.claim_group("B", LEASE_MS) is not None and \
        await qb.claim_group("B", LEASE_MS) is None
    assert await qb.expire_leases_of("A") == 1
    # With no time passed: A's group is B's now (fenced), and so is the stream.
    taken = await qb.claim_group("B", LEASE_MS)
    assert (taken.group_no, taken.token) == (lease.group_no, 2)
    assert not await qa.renew_group_lease(lease, LEASE_MS)
    assert await qb.acquire_submission(UID, "B", LEASE_MS)
    assert _rows(path, "SELECT submission_owner FROM batches") == [("B",)]


async def test_a_fresh_supervisors_first_worker_expires_every_lease_left_once(
        workers, clock) -> None:
    """The workers of a crashed supervisor left a group and the stream
    leased for long. A restarted worker is told only of its own slot's dead
    (none here): it leaves the leases alone. The first worker of a fresh
    supervisor knows that nothing else lives on the file: its start-up sweep
    expires them all at once (the batch is INTERRUPTED, its group taken over
    fenced), and only that first sweep: a lease taken afterwards stands."""
    qa, _, _, path = workers
    assert await qa.acquire_submission(UID, "A", LEASE_MS)
    lease = await qa.claim_group("A", LEASE_MS)
    database = await _worker_database(path)
    try:
        await _first_worker_sweeps(qa, lease, path, database)
    finally:
        await database.close()


async def _first_worker_sweeps(qa: SqliteGroupQueue, lease: GroupLease, path: Path,
                               database: SqliteDatabase) -> None:
    restarted = SqliteGroupQueue(database, ProtobufSnapshots())
    first = SqliteGroupQueue(database, ProtobufSnapshots(), alone_at_start=True)
    assert await restarted.interrupt_abandoned() == 0
    assert _rows(path, "SELECT lease_owner FROM batch_groups WHERE status = 'LEASED'") == [("A",)]
    assert await first.interrupt_abandoned() == 1
    assert _rows(path, "SELECT status FROM batches") == [("INTERRUPTED",)]
    taken = await first.claim_group("F", LEASE_MS)
    assert (taken.group_no, taken.token) == (lease.group_no, 2)
    assert not await qa.renew_group_lease(lease, LEASE_MS)
    await first.interrupt_abandoned()  # a later sweep of the same worker
    other = await qa.claim_group("A2", LEASE_MS)
    assert other is not None and other.group_no != taken.group_no
    assert await first.renew_group_lease(taken, LEASE_MS)


async def test_one_submission_at_a_time_whichever_worker(workers, clock) -> None:
    qa, qb, _, _ = workers
    assert await qa.acquire_submission(UID, "A", LEASE_MS)
    assert await qa.acquire_submission(UID, "A", LEASE_MS)  # its own again
    assert not await qb.acquire_submission(UID, "B", LEASE_MS)
    assert not await qb.renew_submission(UID, "B", LEASE_MS)
    clock.now_us = T0 + LEASE_MS * 1_000  # the lease's last µs
    assert not await qb.acquire_submission(UID, "B", LEASE_MS)
    assert await qa.renew_submission(UID, "A", LEASE_MS)
    clock.now_us = T0 + 2 * LEASE_MS * 1_000 + 1  # past the renewed lease
    assert await qb.acquire_submission(UID, "B", LEASE_MS)
    assert not await qa.renew_submission(UID, "A", LEASE_MS)
    await qa.release_submission(UID, "A")  # not A's any more: nothing happens
    assert not await qa.acquire_submission(UID, "A", LEASE_MS)
    await qb.release_submission(UID, "B")
    assert await qa.acquire_submission(UID, "A", LEASE_MS)


async def test_a_released_group_is_claimed_again_at_once(workers, clock) -> None:
    qa, qb, _, _ = workers
    lease = await qa.claim_group("A", LEASE_MS)
    await qa.release_group_lease(lease)
    taken = await qb.claim_group("B", LEASE_MS)
    assert (taken.group_no, taken.token, taken.taken_over) == (1, 2, True)


async def test_a_stop_reaches_every_workers_next_claim(workers, clock) -> None:
    qa, qb, _, _ = workers
    lease = await qa.claim_group("A", LEASE_MS)
    group = BatchGroup(1, "card", await qa.group_items(UID, 1), started_at_us=5,
                       completed_at_us=6)
    for item in group.items:
        item.status = S.FAILED
    assert await qa.save_group_results(UID, group, lease, stops_batch="item 'r0001' failed")
    assert (await qb.claim_group("B", LEASE_MS)).stopped_after == "item 'r0001' failed"
    await qb.stop_batch(UID, "another cause")  # the first cause is kept
    assert (await qa.claim_group("A", LEASE_MS)).stopped_after == "item 'r0001' failed"


async def test_only_batches_no_live_worker_streams_are_interrupted(workers, clock) -> None:
    qa, qb, _, path = workers
    assert await qa.acquire_submission(UID, "A", LEASE_MS)
    clock.now_us = T0 + LEASE_MS * 1_000  # the stream's lease's last µs
    assert await qb.interrupt_abandoned() == 0
    assert _rows(path, "SELECT status FROM batches") == [("RECEIVING",)]
    clock.now_us += 1
    assert await qb.interrupt_abandoned() == 1
    assert _rows(path, "SELECT status FROM batches") == [("INTERRUPTED",)]


async def test_a_lone_servers_group_left_mid_charge_is_taken_over(workers, clock) -> None:
    """A group a lone server (groups in memory) stored PROCESSING keeps the
    row's default status DONE: the workers' queue claims it again as
    taken over (its items settled before anything else), once the batch's
    stream is opened on a worker."""
    qa, _, store, path = workers
    items = card_items(10, 2)
    await store.insert_items(UID, 1, items, 0)
    for item in items:
        item.status, item.group_no = S.PROCESSING, 4
    await store.mark_group_processing(UID, BatchGroup(4, "card", items, started_at_us=5))
    assert await qa.unfinished_groups(UID) == [1, 2, 3]
    assert await qa.acquire_submission(UID, "A", LEASE_MS)
    assert await qa.unfinished_groups(UID) == [1, 2, 3, 4]
    assert _rows(path, "SELECT status, lease_count FROM batch_groups WHERE group_no = 4") == \
        [("QUEUED", 1)]


async def test_a_lone_server_regroups_what_workers_left_queued(workers, clock) -> None:
    """Workers stopped with group 1 mid-charge (LEASED, items PROCESSING)
    and groups 2-3 queued: a lone server (groups in memory) would never
    claim those, nor group their RECEIVED items again. Opening the batch's
    submission there gives the groups up and frees their waiting items;
    PROCESSING items stay for the submission's resume to settle."""
    qa, _, store, path = workers
    await _group_1_mid_charge(qa)
    # The lone server's own connections (the workers' are gone by then).
    lone_database = await _worker_database(path)
    lone = LoneServerGroupQueue(store, lone_database)
    assert await lone.acquire_submission(UID, "lone", LEASE_MS)
    assert await qa.unfinished_groups(UID) == []
    assert {(i.seq, i.status, i.group_no) for i in await store.items_after(UID, 0, 100)} == {
        *((seq, S.PROCESSING, 1) for seq in (1, 2, 3)),
        *((seq, S.RECEIVED, 0) for seq in range(4, 10))}
    # A group of the lone server's own is never touched (its row is DONE).
    await store.mark_group_processing(UID, BatchGroup(4, "card", [], started_at_us=5))
    assert await lone.acquire_submission(UID, "lone", LEASE_MS)
    assert _rows(path, "SELECT count(*) FROM batch_groups WHERE status <> 'DONE'") == [(0,)]
    await lone_database.close()


async def test_a_group_done_by_another_worker_is_read_as_stored(workers, clock) -> None:
    """The stream's worker (A, which queued the groups) tells a group B did
    from the file, never from the items it queued; a group A claims itself
    first has the items it queued."""
    qa, qb, _, _ = workers
    lease = await qb.claim_group("B", LEASE_MS)
    group = BatchGroup(1, "card", await qb.group_items(UID, 1), started_at_us=5,
                       completed_at_us=6)
    for item in group.items:
        item.status, item.channel_reference = S.SUCCEEDED, f"ch_{item.seq}"
    assert await qb.save_group_results(UID, group, lease)
    assert {(i.status, i.channel_reference) for i in await qa.group_items(UID, 1)} == {
        (S.SUCCEEDED, f"ch_{seq}") for seq in (1, 2, 3)}
    own = await qa.claim_group("A", LEASE_MS)
    assert own.group_no == 2
    assert [(i.seq, i.status, i.group_no) for i in await qa.group_items(UID, 2)] == [
        (seq, S.RECEIVED, 2) for seq in (4, 5, 6)]
