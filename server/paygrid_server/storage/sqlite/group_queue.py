"""GroupQueue on SQLite for workers sharing one file (`serve --workers N`):
groups are durable work units any worker claims under a lease, with the
semantics of PostgreSQL's queue (storage/postgres/group_queue.py): a group a
live worker holds is never claimed by another until its lease runs out or
its owner is declared dead (expire_leases_of); every write under a lease is
fenced by the group's claim count, in the same write transaction.

SQLite has one writer at a time and every unit of work runs under BEGIN
IMMEDIATE (sqlite/writer.py), so a claim needs no row locks: the statements
of one unit see and change the file with no other process in between. Lease
times are this host's wall clock (every process sharing a SQLite file runs
on one machine). Other workers' changes are found by polling
(claim_poll_ms, progress_poll_ms): there is no cross-process notification.
What dead workers leave behind is taken back by sqlite/dead_workers.py.
"""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from typing import Awaitable, Callable

from paygrid_server.domain.model.batch import BatchGroup, BatchItem, BatchItemStatus
from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.domain.ports.group_queue import DoneGroup, GroupLease
from paygrid_server.storage.batch_group_events import completed
from paygrid_server.storage.batch_rows import item_from_row
from paygrid_server.storage.sqlite.batch_group_events import write_group_events
from paygrid_server.storage.sqlite.batch_item_key import OF_BATCH
from paygrid_server.storage.sqlite.batch_item_rows import (
    GROUP_ITEMS_SQL,
    chunks,
    in_list,
    mark_processing,
    save_states,
)
from paygrid_server.storage.sqlite.database import SqliteDatabase, write_then_wake
from paygrid_server.storage.sqlite.dead_workers import (
    adopt_lone_server_groups,
    expire_leases,
    interrupt_abandoned_batches,
)

# Groups queued here whose items are kept for this process's own claim of
# them (no read back): at most this many, the oldest dropped first (another
# worker may claim them; a dropped one is read from the file).
KEPT_GROUPS = 64

_CLAIMABLE = "status <> 'DONE' AND (status = 'QUEUED' OR lease_expires_at_us < :now)"
_CANDIDATES = f"SELECT DISTINCT batch_uid FROM batch_groups WHERE {_CLAIMABLE} LIMIT 32"
# `status <> 'DONE'` in every condition on leases: it lets SQLite use the
# partial index batch_groups_unfinished.
_LIVE_LEASES = ("SELECT count(*) FROM batch_groups WHERE batch_uid = :uid AND status <> 'DONE' "
                "AND status = 'LEASED' AND lease_expires_at_us >= :now")
_CLAIM_IN_BATCH = (
    "UPDATE batch_groups SET status = 'LEASED', lease_owner = :owner, "
    "lease_expires_at_us = :now + :lease_ms * 1000, lease_count = lease_count + 1 "
    "WHERE batch_uid = :uid AND group_no = (SELECT group_no FROM batch_groups "
    f"    WHERE batch_uid = :uid AND {_CLAIMABLE} ORDER BY group_no LIMIT 1) "
    f"AND ({_LIVE_LEASES}) < (SELECT parallelism FROM batches WHERE uid = :uid) "
    f"AND ({_LIVE_LEASES} AND lease_owner = :owner) * :replicas "
    "    < (SELECT parallelism FROM batches WHERE uid = :uid) "
    "RETURNING group_no, group_key, lease_count")
_FENCE = "WHERE batch_uid = ? AND group_no = ? AND status = 'LEASED' AND lease_count = ?"


def _now_us() -> int:
    return time.time_ns() // 1_000


def _holds(db: sqlite3.Connection, lease: GroupLease, changes: str = "",
           params: tuple = ()) -> bool:
    """Whether `lease` is still the group's latest claim (applying `changes`
    to the group if so). The unit holds the file's write lock until its
    COMMIT: no claim can come between the fence and the writes after it."""
    return db.execute(f"UPDATE batch_groups SET {changes or 'lease_owner = lease_owner'} {_FENCE}",
                      (*params, lease.batch_uid, lease.group_no, lease.token)).rowcount == 1


class SqliteGroupQueue:
    durable = True  # groups outlive a worker: leased in the file

    def __init__(self, database: SqliteDatabase, encoder: SnapshotEncoder,
                 events_written: Callable[[], None] = lambda: None,
                 alone_at_start: bool = False) -> None:
        # The supervisor's first worker: its start-up sweep expires every
        # lease on the file (no other process lived then: the supervisor
        # holds the file's lock), not only those of workers it was told died.
        self._alone_at_start = alone_at_start
        self._reader = database.reader
        self._plain_write = database.write
        self._encoder = encoder
        self._write = write_then_wake(database.write, events_written)
        # Items of groups queued here, as stored, by (batch uid, group no).
        self._kept: OrderedDict[tuple[str, int], list[BatchItem]] = OrderedDict()
        # Those of them claimed here first, until their worker takes them.
        self._claimed: dict[tuple[str, int], list[BatchItem]] = {}
        self._idle = True  # the last claim found nothing: poll with a read first

    async def queue_group(self, batch_uid: str, group: BatchGroup, parallelism: int) -> None:
        # `parallelism` is the batch's stored one (start_submission), read at claim.
        def queue(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO batch_groups (batch_uid, group_no, group_key, size, "
                       "started_at_us, status) VALUES (?, ?, ?, ?, 0, 'QUEUED')",
                       (batch_uid, group.group_no, group.key, len(group.items)))
            for chunk in chunks([item.seq for item in group.items]):
                db.execute(f"UPDATE batch_items SET group_no = ? WHERE {OF_BATCH} "
                           f"AND seq IN ({in_list(len(chunk))})",
                           (group.group_no, batch_uid, *chunk))

        await self._plain_write(queue)
        for item in group.items:
            item.group_no = group.group_no
        self._kept[(batch_uid, group.group_no)] = group.items
        while len(self._kept) > KEPT_GROUPS:
            self._kept.popitem(last=False)
        self._idle = False

    async def claim_group(self, owner: str, lease_ms: int) -> GroupLease | None:
        def claim(db: sqlite3.Connection) -> GroupLease | None:
            now = _now_us()
            db.execute("INSERT INTO batch_replicas (owner, seen_at_us) VALUES (?, ?) "
                       "ON CONFLICT (owner) DO UPDATE SET seen_at_us = excluded.seen_at_us",
                       (owner, now))
            # Each live worker takes at most parallelism / workers of a batch.
            (replicas,), = db.execute("SELECT count(*) FROM batch_replicas WHERE seen_at_us >= ?",
                                      (now - lease_ms * 1_000,))
            for (batch_uid,) in db.execute(_CANDIDATES, {"now": now}).fetchall():
                row = db.execute(_CLAIM_IN_BATCH, {
                    "uid": batch_uid, "owner": owner, "now": now, "lease_ms": lease_ms,
                    "replicas": replicas}).fetchone()
                if row is not None:
                    (stopped_after,), = db.execute(
                        "SELECT stopped_after FROM batches WHERE uid = ?", (batch_uid,))
                    return GroupLease(batch_uid, row[0], row[1], owner, row[2], stopped_after)
            return None

        if self._idle and not await self._claimable():
            return None  # an idle worker's poll costs a read, not a write
        lease = await self._plain_write(claim)
        self._idle = lease is None
        if lease is not None:
            kept = self._kept.pop((lease.batch_uid, lease.group_no), None)
            # Claimed before (taken over): what it holds now is in the file.
            if kept is not None and not lease.taken_over:
                self._claimed[(lease.batch_uid, lease.group_no)] = kept
        return lease

    async def _claimable(self) -> bool:
        rows = await self._reader.execute_fetchall(
            f"SELECT 1 FROM batch_groups WHERE {_CLAIMABLE} LIMIT 1", {"now": _now_us()})
        return bool(rows)

    async def renew_group_lease(self, lease: GroupLease, lease_ms: int) -> bool:
        return await self._plain_write(lambda db: _holds(
            db, lease, "lease_expires_at_us = ?", (_now_us() + lease_ms * 1_000,)))

    async def release_group_lease(self, lease: GroupLease) -> None:
        self._claimed.pop((lease.batch_uid, lease.group_no), None)
        await self._plain_write(lambda db: _holds(db, lease, "lease_expires_at_us = 0"))

    def abandon_group_lease(self, lease: GroupLease) -> None:
        pass  # the lease runs out; whoever claims the group next settles it

    async def group_items(self, batch_uid: str, group_no: int) -> list[BatchItem]:
        # Queued here and claimed here first: unchanged since. Anything else
        # (a group another worker did, for this process's stream to tell)
        # is read as stored.
        claimed = self._claimed.pop((batch_uid, group_no), None)
        if claimed is not None:
            return claimed
        rows = await self._reader.execute_fetchall(GROUP_ITEMS_SQL, (batch_uid, group_no))
        return [item_from_row(row) for row in rows]

    async def mark_group_processing(self, batch_uid: str, group: BatchGroup,
                                    lease: GroupLease) -> bool:
        processing = [i.seq for i in group.items if i.status is BatchItemStatus.PROCESSING]

        def mark(db: sqlite3.Connection) -> bool:
            if not _holds(db, lease, "started_at_us = ?", (group.started_at_us,)):
                return False
            mark_processing(db, batch_uid, processing)
            return True

        return await self._plain_write(mark)

    async def save_group_results(self, batch_uid: str, group: BatchGroup, lease: GroupLease,
                                 stops_batch: str | None = None,
                                 next_may_start: bool = False) -> bool:
        # next_may_start is not for a durable queue: a group is marked under its own lease.
        def save(db: sqlite3.Connection) -> bool:
            if not _holds(db, lease, "status = 'DONE', completed_at_us = ?, started_at_us = ?, "
                          "processed_by = ?", (group.completed_at_us or None,
                                               group.started_at_us, lease.owner)):
                return False
            # The fence passed: the group goes from LEASED to DONE here, once.
            if stops_batch is not None:
                db.execute("UPDATE batches SET stopped_after = coalesce(stopped_after, ?) "
                           "WHERE uid = ?", (stops_batch, batch_uid))
            write_group_events(db, self._encoder, batch_uid, [completed(group)])
            save_states(db, batch_uid, group.items, was="PROCESSING")
            return True

        return await self._write(save)

    async def save_items(self, batch_uid: str, items: list[BatchItem],
                         lease: GroupLease) -> bool:
        def save(db: sqlite3.Connection) -> bool:
            if not _holds(db, lease):
                return False
            save_states(db, batch_uid, items)
            return True

        return await self._plain_write(save)

    async def unfinished_groups(self, batch_uid: str) -> list[int]:
        rows = await self._reader.execute_fetchall(
            "SELECT group_no FROM batch_groups WHERE batch_uid = ? AND status <> 'DONE' "
            "ORDER BY group_no", (batch_uid,))
        return [row[0] for row in rows]

    async def done_groups(self, batch_uid: str, group_nos: list[int]) -> list[DoneGroup]:
        found: list[DoneGroup] = []
        for chunk in chunks(group_nos):
            found += [DoneGroup(*row) for row in await self._reader.execute_fetchall(
                "SELECT group_no, group_key, started_at_us, completed_at_us, processed_by "
                f"FROM batch_groups WHERE batch_uid = ? AND group_no IN ({in_list(len(chunk))}) "
                "AND status = 'DONE'", (batch_uid, *chunk))]
        return found

    async def stop_batch(self, batch_uid: str, cause: str) -> None:
        await self._plain_write(lambda db: db.execute(
            "UPDATE batches SET stopped_after = coalesce(stopped_after, ?) WHERE uid = ?",
            (cause, batch_uid)))

    # -- one submission at a time, whichever worker ---------------------------

    async def acquire_submission(self, batch_uid: str, owner: str, lease_ms: int) -> bool:
        def acquire(db: sqlite3.Connection) -> bool:
            now = _now_us()
            if db.execute(
                    "UPDATE batches SET submission_owner = ?, submission_lease_expires_at_us = ? "
                    "WHERE uid = ? AND (submission_owner IS NULL OR submission_owner = ? "
                    "OR submission_lease_expires_at_us < ?)",
                    (owner, now + lease_ms * 1_000, batch_uid, owner, now)).rowcount != 1:
                return False
            adopt_lone_server_groups(db, batch_uid)
            return True

        return await self._plain_write(acquire)

    async def renew_submission(self, batch_uid: str, owner: str, lease_ms: int) -> bool:
        return await self._plain_write(lambda db: db.execute(
            "UPDATE batches SET submission_lease_expires_at_us = ? "
            "WHERE uid = ? AND submission_owner = ?",
            (_now_us() + lease_ms * 1_000, batch_uid, owner)).rowcount == 1)

    async def release_submission(self, batch_uid: str, owner: str) -> None:
        for key in [k for k in self._kept if k[0] == batch_uid]:
            del self._kept[key]  # groups another worker claimed
        await self._plain_write(lambda db: db.execute(
            "UPDATE batches SET submission_owner = NULL, submission_lease_expires_at_us = 0 "
            "WHERE uid = ? AND submission_owner = ?", (batch_uid, owner)))

    async def expire_leases_of(self, owner: str) -> int:
        return await self._plain_write(lambda db: expire_leases(db, owner))

    async def watch_groups(self, changed: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        async def nothing() -> None:
            pass

        return nothing  # no cross-process notification on SQLite: polling finds every change

    async def interrupt_abandoned(self) -> int:
        """Batches whose stream's worker died (submission lease free or
        expired) show INTERRUPTED; also run at a worker's start, in place
        of the lone server's sweep of every unfinished batch."""
        alone, self._alone_at_start = self._alone_at_start, False

        def interrupt(db: sqlite3.Connection) -> int:
            now = _now_us()
            if alone:  # every lease on the file is a dead process's
                expire_leases(db, None)
            return interrupt_abandoned_batches(db, self._encoder, now)

        return await self._write(interrupt)

