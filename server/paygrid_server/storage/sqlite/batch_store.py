"""BatchStore on SQLite, sharing the database (and its writer) with payments."""

from __future__ import annotations

import functools
import sqlite3
from typing import Callable

from paygrid_server.domain.model.batch import (
    Batch,
    BatchCounts,
    BatchGroup,
    BatchHeader,
    BatchItem,
    BatchItemStatus,
    BatchStatus,
)
from paygrid_server.domain.model.payment import Failure
from paygrid_server.domain.ports.batch_store import IngestOutcome
from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.storage.batch_item_ingest import sort_incoming
from paygrid_server.storage.batch_rows import ITEM_COLUMNS as _ITEM_COLUMNS
from paygrid_server.storage.batch_rows import batch_from_row as _batch
from paygrid_server.storage.batch_rows import item_from_row as _item
from paygrid_server.storage.failure_columns import failure_columns
from paygrid_server.storage.sqlite import batch_item_counts
from paygrid_server.storage.sqlite.batch_item_counts import status_counts
from paygrid_server.storage.batch_group_events import completed
from paygrid_server.storage.sqlite.batch_item_inserts import insert_chunk
from paygrid_server.storage.sqlite.batch_item_key import OF_BATCH, OF_BATCH_NAMED
from paygrid_server.storage.sqlite.batch_events import batch_status, write_batch_event
from paygrid_server.storage.sqlite.batch_group_events import save_and_report, write_group_events
from paygrid_server.storage.sqlite.batch_item_rows import (
    chunks,
    in_list,
    mark_processing,
    save_results,
)
from paygrid_server.storage.sqlite.database import SqliteDatabase, write_then_wake


# batch_items_by_status's WHERE (migrations/0012, made again in 0014), and the
# statuses it leaves out.
_WALKED = ("RECEIVED", "SUCCEEDED")
_INDEXED = f"status NOT IN {_WALKED}"


@functools.cache
def items_after_sql(statuses: tuple[str, ...]) -> str:
    """The items after seq :after_seq of batch :batch_uid in these statuses
    (all: none named; the n-th is :status_n), :limit at most; the parameters
    by name (items_after_parameters), as each arm repeats them. One range of
    batch_items_by_status per status it holds, merged in seq order:
    `status IN (...)` would walk every item after :after_seq. The index is
    partial (migrations/0012, 0014): an arm names its WHERE to use it; a RECEIVED
    or SUCCEEDED arm walks the batch by seq."""
    arms = [f"AND status = :status_{n}" + ("" if status in _WALKED else f" AND {_INDEXED}")
            for n, status in enumerate(statuses)] or [""]
    return (" UNION ALL ".join(f"SELECT {_ITEM_COLUMNS} FROM batch_items "
                               f"WHERE {OF_BATCH_NAMED} AND seq > :after_seq {arm}"
                               for arm in arms)
            + " ORDER BY seq LIMIT :limit")


def items_after_parameters(batch_uid: str, after_seq: int, limit: int,
                           statuses: tuple[str, ...]) -> dict[str, object]:
    """items_after_sql's parameters."""
    return {"batch_uid": batch_uid, "after_seq": after_seq, "limit": limit,
            **{f"status_{n}": status for n, status in enumerate(statuses)}}


class SqliteBatchStore:
    def __init__(self, database: SqliteDatabase, encoder: SnapshotEncoder,
                 events_written: Callable[[], None] = lambda: None) -> None:
        self._reader = database.reader
        self._encoder = encoder
        # events_written wakes watchers (SqliteEventLog.signal)
        self._write = write_then_wake(database.write, events_written)

    async def insert_batch(self, batch: Batch) -> Batch | None:
        h = batch.header

        def insert(db: sqlite3.Connection) -> bool:
            inserted = db.execute(
                "INSERT INTO batches (tenant_id, batch_id, uid, payer, grouping, max_group_size, "
                "parallelism, fingerprint, status, submissions, created_at_us, "
                "submission_started_at_us, failure_policy, item_key) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                # The key its items are stored under (sqlite/batch_item_key.py);
                # the one writer (or the file's write lock) keeps it unique.
                "(SELECT coalesce(max(item_key), 0) + 1 FROM batches)) "
                "ON CONFLICT (tenant_id, batch_id) DO NOTHING",
                (batch.tenant_id, batch.batch_id, batch.uid, h.payer, h.grouping.value,
                 h.max_group_size, h.parallelism, batch.fingerprint, batch.status.value,
                 batch.submissions, batch.created_at_us,
                 batch.submission_started_at_us, h.failure_policy.value)).rowcount == 1
            if inserted:
                batch_item_counts.create(db, batch.uid)
                write_batch_event(db, self._encoder, batch.uid, None)
            return inserted

        if await self._write(insert):
            return None
        return await self.get_batch(batch.tenant_id, batch.batch_id)

    async def get_batch(self, tenant_id: str, batch_id: str) -> Batch | None:
        # Reads are whole execute_fetchall calls: a cursor open across an
        # await holds the shared reader's snapshot (sqlite/payment_store.py).
        rows = await self._reader.execute_fetchall(
            "SELECT * FROM batches WHERE tenant_id = ? AND batch_id = ?", (tenant_id, batch_id))
        return _batch(rows[0]) if rows else None

    async def get_batch_by_uid(self, batch_uid: str) -> Batch | None:
        rows = await self._reader.execute_fetchall("SELECT * FROM batches WHERE uid = ?",
                                                   (batch_uid,))
        return _batch(rows[0]) if rows else None

    async def start_submission(self, batch_uid: str, header: BatchHeader,
                               started_at_us: int) -> tuple[int, int, int]:
        def start(db: sqlite3.Connection) -> tuple[int, int, int]:
            status_before = batch_status(db, batch_uid)
            db.execute(
                "UPDATE batches SET submissions = submissions + 1, status = 'RECEIVING', "
                "max_group_size = ?, parallelism = ?, submission_started_at_us = ? "
                "WHERE uid = ?",
                (header.max_group_size, header.parallelism, started_at_us, batch_uid))
            submission, max_seq, max_group = db.execute(
                "SELECT submissions, "
                f"(SELECT coalesce(max(seq), 0) FROM batch_items WHERE {OF_BATCH}), "
                "(SELECT coalesce(max(group_no), 0) FROM batch_groups WHERE batch_uid = ?) "
                "FROM batches WHERE uid = ?", (batch_uid, batch_uid, batch_uid)).fetchone()
            write_batch_event(db, self._encoder, batch_uid, status_before)
            return submission, max_seq + 1, max_group + 1

        return await self._write(start)

    async def insert_items(self, batch_uid: str, submission: int, items: list[BatchItem],
                           unstored_rejections: int) -> IngestOutcome:
        def insert(db: sqlite3.Connection) -> IngestOutcome:
            outcome = IngestOutcome()
            existing: dict[str, sqlite3.Row | object] = {}
            for chunk in chunks([item.reference for item in items]):
                existing.update({row["reference"]: row for row in db.execute(
                    f"SELECT {_ITEM_COLUMNS}, submission FROM batch_items "
                    f"WHERE {OF_BATCH} AND reference IN ({in_list(len(chunk))})",
                    (batch_uid, *chunk))})
            fresh, resent = sort_incoming(items, existing, submission, outcome)
            for chunk in chunks(fresh):
                insert_chunk(db, batch_uid, submission, chunk)
            batch_item_counts.add(db, batch_uid, status_counts(fresh))
            # Seen in this submission now: a second copy later in the stream is a duplicate.
            for chunk in chunks(resent):
                db.execute(f"UPDATE batch_items SET submission = ? "
                           f"WHERE {OF_BATCH} AND seq IN ({in_list(len(chunk))})",
                           (submission, batch_uid, *chunk))
            unstored = unstored_rejections + len(outcome.refused)
            if unstored:
                db.execute("UPDATE batches SET unstored_rejections = unstored_rejections + ? "
                           "WHERE uid = ?", (unstored, batch_uid))
            outcome.new = fresh
            return outcome

        return await self._write(insert)

    async def mark_group_processing(self, batch_uid: str, group: BatchGroup) -> None:
        await self._write(lambda db: _mark(db, batch_uid, group))

    async def save_group_results(self, batch_uid: str, group: BatchGroup) -> None:
        await self._write(lambda db: self._save_results(db, batch_uid, group))

    async def save_group_results_then_mark(self, batch_uid: str, done: BatchGroup,
                                           then: BatchGroup) -> None:
        """save_group_results(done) and mark_group_processing(then) in one
        transaction: one COMMIT to wait for instead of two
        (storage/single_process_group_queue.py says when)."""
        def both(db: sqlite3.Connection) -> None:
            self._save_results(db, batch_uid, done)
            _mark(db, batch_uid, then)

        await self._write(both)

    def _save_results(self, db: sqlite3.Connection, batch_uid: str, group: BatchGroup) -> None:
        # started_at_us again: a group marked ahead was stored with the time
        # of that mark; its processing started when it was claimed.
        completes = db.execute(
            "UPDATE batch_groups SET completed_at_us = ?, started_at_us = ? "
            "WHERE batch_uid = ? AND group_no = ? AND completed_at_us IS NULL",
            (group.completed_at_us, group.started_at_us, batch_uid,
             group.group_no)).rowcount == 1
        if not completes:  # saved again: only a change is reported
            save_and_report(db, self._encoder, batch_uid, group.items)
            return
        # The payloads are `group` as its items are stored next, column for
        # column (what else an item holds never changes after its insert):
        # no read back of the group's rows on every group's way.
        write_group_events(db, self._encoder, batch_uid, [completed(group)])
        save_results(db, batch_uid, group.items)

    async def save_items(self, batch_uid: str, items: list[BatchItem]) -> None:
        await self._write(lambda db: save_and_report(db, self._encoder, batch_uid, items))

    async def reject_waiting_items(self, batch_uid: str, failure: Failure) -> int:
        def reject(db: sqlite3.Connection) -> int:
            rejected = db.execute(
                "UPDATE batch_items SET status = 'REJECTED', failure_reason = ?, "
                "failure_message = ?, failure_decline_code = ? "
                f"WHERE {OF_BATCH} AND status = 'RECEIVED'",
                (*failure_columns(failure), batch_uid)).rowcount
            batch_item_counts.add(db, batch_uid, {"RECEIVED": -rejected, "REJECTED": rejected})
            return rejected

        return await self._write(reject)

    async def items_after(self, batch_uid: str, after_seq: int, limit: int,
                          statuses: tuple[BatchItemStatus, ...] = ()) -> list[BatchItem]:
        named = tuple(dict.fromkeys(s.value for s in statuses))
        return [_item(row) for row in await self._reader.execute_fetchall(
            items_after_sql(named), items_after_parameters(batch_uid, after_seq, limit, named))]

    async def counts(self, batch_uid: str) -> BatchCounts:
        return await batch_item_counts.read(self._reader, batch_uid)

    async def group_processing_us(self, batch_uid: str) -> list[int]:
        return [row[0] for row in await self._reader.execute_fetchall(
            "SELECT completed_at_us - started_at_us FROM batch_groups "
            "WHERE batch_uid = ? AND completed_at_us IS NOT NULL", (batch_uid,))]

    async def set_status(self, batch_uid: str, status: BatchStatus) -> None:
        def save(db: sqlite3.Connection) -> None:
            status_before = batch_status(db, batch_uid)
            db.execute("UPDATE batches SET status = ? WHERE uid = ?", (status.value, batch_uid))
            write_batch_event(db, self._encoder, batch_uid, status_before)

        await self._write(save)

    async def finish_submission(self, batch_uid: str, status: BatchStatus, wall_us: int,
                                completed_at_us: int | None) -> None:
        def finish(db: sqlite3.Connection) -> None:
            status_before = batch_status(db, batch_uid)
            db.execute(
                "UPDATE batches SET status = ?, wall_us_before = wall_us_before + ?, "
                "completed_at_us = coalesce(?, completed_at_us) WHERE uid = ?",
                (status.value, wall_us, completed_at_us, batch_uid))
            write_batch_event(db, self._encoder, batch_uid, status_before)

        await self._write(finish)

    async def interrupt_abandoned(self) -> int:
        # A lone server's sweep: workers sharing the file sweep through
        # their group queue, which knows the batches a live worker streams.
        def interrupt(db: sqlite3.Connection) -> int:
            stopped = db.execute("SELECT uid, status FROM batches "
                                 "WHERE status IN ('RECEIVING', 'PROCESSING')").fetchall()
            db.execute(
                "UPDATE batches SET status = 'INTERRUPTED', wall_us_before = wall_us_before + "
                "max(0, coalesce((SELECT max(completed_at_us) FROM batch_groups g "
                "        WHERE g.batch_uid = batches.uid) - submission_started_at_us, 0)) "
                "WHERE status IN ('RECEIVING', 'PROCESSING')")
            for uid, status_before in stopped:
                write_batch_event(db, self._encoder, uid, status_before)
            return len(stopped)

        return await self._write(interrupt)


def _mark(db: sqlite3.Connection, batch_uid: str, group: BatchGroup) -> None:
    # A group is formed from items as stored (by insert_items, or read
    # back to be regrouped); only their status and group number change
    # when it starts, the same for all of them.
    db.execute(
        "INSERT INTO batch_groups (batch_uid, group_no, group_key, size, started_at_us) "
        "VALUES (?, ?, ?, ?, ?)",
        (batch_uid, group.group_no, group.key, len(group.items), group.started_at_us))
    mark_processing(db, batch_uid, [item.seq for item in group.items], group.group_no)
