"""BatchStore on SQLite, sharing the database (and its writer) with payments."""

from __future__ import annotations

import sqlite3

import aiosqlite

from paygrid_server.domain.batch import (
    Batch,
    BatchCounts,
    BatchGroup,
    BatchHeader,
    BatchItem,
    BatchItemStatus,
    BatchStatus,
    GroupingPolicy,
    ItemResult,
)
from paygrid_server.domain.money import Money
from paygrid_server.domain.payment import Failure, FailureReason
from paygrid_server.ports.batch_store import IngestOutcome
from paygrid_server.storage.failure_columns import failure_columns, failure_from_columns
from paygrid_server.storage.sqlite_database import SqliteDatabase

_ITEM_COLUMNS = (
    "seq, reference, payee, currency, amount_minor, requested_channel, requested_at_us, "
    "channel, status, attempt, group_no, channel_reference, failure_reason, failure_message, "
    "failure_decline_code")

# SQLite's default limit on host parameters is 32766; chunks stay well under.
_IN_CHUNK = 500


def _batch(row: aiosqlite.Row) -> Batch:
    header = BatchHeader(row["batch_id"], row["payer"], GroupingPolicy(row["grouping"]),
                         row["max_group_size"], row["parallelism"])
    return Batch(
        tenant_id=row["tenant_id"], batch_id=row["batch_id"], uid=row["uid"], header=header,
        fingerprint=row["fingerprint"],
        status=BatchStatus(row["status"]), submissions=row["submissions"],
        created_at_us=row["created_at_us"], completed_at_us=row["completed_at_us"],
        wall_us_before=row["wall_us_before"],
        submission_started_at_us=row["submission_started_at_us"])


def _item(row: aiosqlite.Row) -> BatchItem:
    return BatchItem(
        seq=row["seq"], reference=row["reference"], payee=row["payee"],
        amount=Money(row["currency"], row["amount_minor"]),
        requested_channel=row["requested_channel"], requested_at_us=row["requested_at_us"],
        channel=row["channel"], status=BatchItemStatus(row["status"]), attempt=row["attempt"],
        group_no=row["group_no"], channel_reference=row["channel_reference"],
        failure=failure_from_columns(row["failure_reason"], row["failure_message"],
                                     row["failure_decline_code"]))


def _item_state(batch_uid: str, item: BatchItem) -> tuple:
    return (item.status.value, item.attempt, item.group_no, item.channel_reference,
            *failure_columns(item.failure), batch_uid, item.seq)


_UPDATE_ITEM_STATE = (
    "UPDATE batch_items SET status = ?, attempt = ?, group_no = ?, channel_reference = ?, "
    "failure_reason = ?, failure_message = ?, failure_decline_code = ? "
    "WHERE batch_uid = ? AND seq = ?")


class SqliteBatchStore:
    def __init__(self, database: SqliteDatabase) -> None:
        self._reader = database.reader
        self._write = database.write

    async def insert_batch(self, batch: Batch) -> Batch | None:
        h = batch.header

        def insert(db: sqlite3.Connection) -> bool:
            return db.execute(
                "INSERT INTO batches (tenant_id, batch_id, uid, payer, grouping, max_group_size, "
                "parallelism, fingerprint, status, submissions, created_at_us, "
                "submission_started_at_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant_id, batch_id) DO NOTHING",
                (batch.tenant_id, batch.batch_id, batch.uid, h.payer, h.grouping.value,
                 h.max_group_size, h.parallelism, batch.fingerprint, batch.status.value,
                 batch.submissions, batch.created_at_us,
                 batch.submission_started_at_us)).rowcount == 1

        if await self._write(insert):
            return None
        return await self.get_batch(batch.tenant_id, batch.batch_id)

    async def get_batch(self, tenant_id: str, batch_id: str) -> Batch | None:
        async with self._reader.execute(
                "SELECT * FROM batches WHERE tenant_id = ? AND batch_id = ?",
                (tenant_id, batch_id)) as rows:
            row = await rows.fetchone()
        return _batch(row) if row else None

    async def start_submission(self, batch_uid: str, header: BatchHeader,
                               started_at_us: int) -> tuple[int, int, int]:
        def start(db: sqlite3.Connection) -> tuple[int, int, int]:
            db.execute(
                "UPDATE batches SET submissions = submissions + 1, status = 'RECEIVING', "
                "max_group_size = ?, parallelism = ?, submission_started_at_us = ? "
                "WHERE uid = ?",
                (header.max_group_size, header.parallelism, started_at_us, batch_uid))
            submission, max_seq, max_group = db.execute(
                "SELECT submissions, "
                "(SELECT coalesce(max(seq), 0) FROM batch_items WHERE batch_uid = ?), "
                "(SELECT coalesce(max(group_no), 0) FROM batch_groups WHERE batch_uid = ?) "
                "FROM batches WHERE uid = ?", (batch_uid, batch_uid, batch_uid)).fetchone()
            return submission, max_seq + 1, max_group + 1

        return await self._write(start)

    async def insert_items(self, batch_uid: str, submission: int, items: list[BatchItem],
                           unstored_rejections: int) -> IngestOutcome:
        def insert(db: sqlite3.Connection) -> IngestOutcome:
            outcome = IngestOutcome()
            existing: dict[str, sqlite3.Row] = {}
            references = [item.reference for item in items]
            for start in range(0, len(references), _IN_CHUNK):
                chunk = references[start:start + _IN_CHUNK]
                existing.update({row["reference"]: row for row in db.execute(
                    f"SELECT {_ITEM_COLUMNS}, submission, content_digest FROM batch_items "
                    f"WHERE batch_uid = ? AND reference IN ({','.join('?' * len(chunk))})",
                    (batch_uid, *chunk))})
            fresh: list[BatchItem] = []
            resent: list[tuple[int, str, int]] = []
            for item in items:
                prior = existing.get(item.reference)
                if prior is None:
                    fresh.append(item)
                    existing[item.reference] = {"submission": submission,  # type: ignore[assignment]
                                                "content_digest": item.content_digest()}
                elif prior["submission"] == submission:
                    outcome.refused.append(ItemResult(
                        item.reference, BatchItemStatus.REJECTED, failure=Failure(
                            FailureReason.DUPLICATE_REFERENCE,
                            f"reference {item.reference!r} appears twice in this batch")))
                elif prior["content_digest"] != item.content_digest():
                    outcome.refused.append(ItemResult(
                        item.reference, BatchItemStatus.REJECTED, failure=Failure(
                            FailureReason.REFERENCE_CONFLICT,
                            f"reference {item.reference!r} was first sent with other content")))
                else:
                    resent.append((submission, batch_uid, prior["seq"]))
                    outcome.resent.append(_item(prior))
            db.executemany(
                f"INSERT INTO batch_items ({_ITEM_COLUMNS}, batch_uid, content_digest, submission) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(i.seq, i.reference, i.payee, i.amount.currency, i.amount.amount_minor,
                  i.requested_channel, i.requested_at_us, i.channel, i.status.value, i.attempt,
                  i.group_no, i.channel_reference, *failure_columns(i.failure), batch_uid,
                  i.content_digest(), submission) for i in fresh])
            # Seen in this submission now: a second copy later in the stream is a duplicate.
            db.executemany(
                "UPDATE batch_items SET submission = ? WHERE batch_uid = ? AND seq = ?", resent)
            unstored = unstored_rejections + len(outcome.refused)
            if unstored:
                db.execute("UPDATE batches SET unstored_rejections = unstored_rejections + ? "
                           "WHERE uid = ?", (unstored, batch_uid))
            outcome.new = fresh
            return outcome

        return await self._write(insert)

    async def mark_group_processing(self, batch_uid: str, group: BatchGroup) -> None:
        def mark(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO batch_groups (batch_uid, group_no, group_key, size, started_at_us) "
                "VALUES (?, ?, ?, ?, ?)",
                (batch_uid, group.group_no, group.key, len(group.items), group.started_at_us))
            db.executemany(_UPDATE_ITEM_STATE, [_item_state(batch_uid, i) for i in group.items])

        await self._write(mark)

    async def save_group_results(self, batch_uid: str, group: BatchGroup) -> None:
        def save(db: sqlite3.Connection) -> None:
            db.executemany(_UPDATE_ITEM_STATE, [_item_state(batch_uid, i) for i in group.items])
            db.execute(
                "UPDATE batch_groups SET completed_at_us = ? WHERE batch_uid = ? AND group_no = ?",
                (group.completed_at_us, batch_uid, group.group_no))

        await self._write(save)

    async def save_items(self, batch_uid: str, items: list[BatchItem]) -> None:
        await self._write(lambda db: db.executemany(
            _UPDATE_ITEM_STATE, [_item_state(batch_uid, i) for i in items]))

    async def items_after(self, batch_uid: str, after_seq: int, limit: int,
                          statuses: tuple[BatchItemStatus, ...] = ()) -> list[BatchItem]:
        where = ""
        if statuses:
            where = f"AND status IN ({','.join('?' * len(statuses))}) "
        async with self._reader.execute(
                f"SELECT {_ITEM_COLUMNS} FROM batch_items WHERE batch_uid = ? AND seq > ? "
                f"{where}ORDER BY seq LIMIT ?",
                (batch_uid, after_seq, *(s.value for s in statuses), limit)) as rows:
            return [_item(row) async for row in rows]

    async def counts(self, batch_uid: str) -> BatchCounts:
        async with self._reader.execute(
                "SELECT status, count(*) FROM batch_items WHERE batch_uid = ? GROUP BY status",
                (batch_uid,)) as rows:
            by_status = {BatchItemStatus(status): n async for status, n in rows}
        async with self._reader.execute(
                "SELECT unstored_rejections FROM batches WHERE uid = ?", (batch_uid,)) as rows:
            row = await rows.fetchone()
        unstored = row[0] if row else 0
        rejected = by_status.get(BatchItemStatus.REJECTED, 0) + unstored
        succeeded = by_status.get(BatchItemStatus.SUCCEEDED, 0)
        failed = by_status.get(BatchItemStatus.FAILED, 0)
        total = sum(by_status.values()) + unstored
        return BatchCounts(total, succeeded, failed, rejected,
                           total - succeeded - failed - rejected)

    async def group_processing_us(self, batch_uid: str) -> list[int]:
        async with self._reader.execute(
                "SELECT completed_at_us - started_at_us FROM batch_groups "
                "WHERE batch_uid = ? AND completed_at_us IS NOT NULL", (batch_uid,)) as rows:
            return [row[0] async for row in rows]

    async def set_status(self, batch_uid: str, status: BatchStatus) -> None:
        await self._write(lambda db: db.execute(
            "UPDATE batches SET status = ? WHERE uid = ?", (status.value, batch_uid)))

    async def finish_submission(self, batch_uid: str, status: BatchStatus, wall_us: int,
                                completed_at_us: int | None) -> None:
        await self._write(lambda db: db.execute(
            "UPDATE batches SET status = ?, wall_us_before = wall_us_before + ?, "
            "completed_at_us = coalesce(?, completed_at_us) WHERE uid = ?",
            (status.value, wall_us, completed_at_us, batch_uid)))

    async def interrupt_abandoned(self) -> int:
        return await self._write(lambda db: db.execute(
            "UPDATE batches SET status = 'INTERRUPTED', wall_us_before = wall_us_before + "
            "max(0, coalesce((SELECT max(completed_at_us) FROM batch_groups g "
            "        WHERE g.batch_uid = batches.uid) - submission_started_at_us, 0)) "
            "WHERE status IN ('RECEIVING', 'PROCESSING')").rowcount)
