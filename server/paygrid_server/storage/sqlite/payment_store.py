"""PaymentStore on SQLite: a commit is on disk before the call that needed
it is answered (see sqlite/database.py). Each write is one BEGIN IMMEDIATE
transaction (the file's write lock, across `--workers` processes too): a key
is taken by INSERT ... ON CONFLICT DO NOTHING, a refund checked and reserved
by one conditional UPDATE, versions read and written in the file. Whose
unfinished work is whose: sqlite/file_sharing.py."""

from __future__ import annotations

import sqlite3
from typing import Callable, TypeVar

import aiosqlite

from paygrid_server.domain.model.payment import (
    ChargeAttempt,
    Leg,
    LegStatus,
    Payment,
    PaymentStatus,
)
from paygrid_server.domain.model.refund import Refund, RefundStatus
from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.domain.ports.payment_store import PageCursor, RefundExceedsRefundable
from paygrid_server.domain.model.event import EventType
from paygrid_server.storage.event_rows import payment_outcome_change, refund_outcome_type
from paygrid_server.storage.failure_columns import failure_columns
from paygrid_server.storage.payment_rows import leg_from_row as _leg
from paygrid_server.storage.payment_rows import payment_from_row as _payment
from paygrid_server.storage.payment_rows import (
    BEFORE_OUTCOME_SQL,
    first_attempt_rows,
    leg_outcome_rows,
    leg_rows,
    payment_outcome_row,
    payment_row,
    refund_from_rows,
    refund_leg_row,
    refund_row,
)
from paygrid_server.storage.sqlite.database import SqliteDatabase, write_then_wake
from paygrid_server.storage.sqlite.file_sharing import LONE, FileSharing
from paygrid_server.storage.sqlite.payment_events import (
    write_payment_events,
    write_refund_event,
)

T = TypeVar("T")

_BEFORE_OUTCOME = BEFORE_OUTCOME_SQL.format("?")


class SqlitePaymentStore:
    def __init__(self, database: SqliteDatabase, encoder: SnapshotEncoder,
                 events_written: Callable[[], None] = lambda: None,
                 sharing: FileSharing = LONE) -> None:
        self._reader = database.reader
        self._payments = sharing.unfinished_work()
        self._refunds = sharing.unfinished_work()
        self._encoder = encoder
        # events_written wakes watchers (SqliteEventLog.signal)
        self._write = write_then_wake(database.write, events_written)

    # -- payments -----------------------------------------------------------

    async def insert_payment(self, payment: Payment) -> Payment | None:
        def insert(db: sqlite3.Connection) -> bool:
            # version 1: the payment.created event written below.
            cursor = db.execute(
                "INSERT INTO payments (payment_id, tenant_id, idempotency_key, fingerprint, payer, "
                "mode, status, metadata_json, received_at_us, version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1) "
                "ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
                payment_row(payment))
            if cursor.rowcount == 0:
                return False
            db.executemany(
                "INSERT INTO payment_legs (payment_id, leg_index, payee, currency, amount_minor, "
                "requested_channel, reference, status, channel, channel_reference, attempts, "
                "latency_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                leg_rows(payment))
            # Before any channel call, so recovery knows where each leg may
            # have been charged (domain/ports/payment_store.py).
            db.executemany(
                "INSERT INTO charge_attempts (payment_id, leg_index, channel, attempt_no, "
                "started_at_us) VALUES (?, ?, ?, 1, ?)",
                first_attempt_rows(payment))
            # The rows just inserted are this object, column for column: no
            # need to read them back (the insert is a third of Pay's writes).
            write_payment_events(db, self._encoder, [EventType.PAYMENT_CREATED], payment, 0)
            return True

        if await self._write(insert):
            payment.version = 1
            self._payments.started(payment.payment_id)
            return None
        # The key's payment is committed by now (at the latest by the commit
        # that carried this unit), so the reader sees it.
        existing = await self._load_payments(
            self._reader, "SELECT * FROM payments WHERE tenant_id = ? AND idempotency_key = ?",
            (payment.tenant_id, payment.idempotency_key))
        return existing[0]

    async def get_payment(self, payment_id: str) -> Payment | None:
        found = await self._load_payments(
            self._reader, "SELECT * FROM payments WHERE payment_id = ?", (payment_id,))
        return found[0] if found else None

    async def list_payments(self, tenant_id: str, limit: int,
                            after: PageCursor | None) -> list[Payment]:
        if after is None:
            return await self._load_payments(
                self._reader,
                "SELECT * FROM payments WHERE tenant_id = ? "
                "ORDER BY received_at_us DESC, payment_id DESC LIMIT ?", (tenant_id, limit))
        return await self._load_payments(
            self._reader,
            "SELECT * FROM payments WHERE tenant_id = ? AND (received_at_us, payment_id) < (?, ?) "
            "ORDER BY received_at_us DESC, payment_id DESC LIMIT ?",
            (tenant_id, after.received_at_us, after.payment_id, limit))

    async def list_processing_payments(self) -> list[Payment]:
        takes = self._payments.listing()
        return await self._load_payments(
            self._reader, "SELECT * FROM payments WHERE status = 'PROCESSING' "
            "ORDER BY received_at_us", (),
            keep=lambda row: takes(row["payment_id"], row["received_at_us"]))

    async def _load_payments(self, db: aiosqlite.Connection, sql: str, params: tuple,
                             keep: Callable[[sqlite3.Row], bool] = lambda row: True
                             ) -> list[Payment]:
        # Every read is one execute_fetchall: a cursor left open across an
        # await keeps the shared reader's WAL snapshot open, and reads of other
        # tasks interleaved meanwhile see data older than their start (with
        # enough concurrent reads, indefinitely).
        rows = [row for row in await db.execute_fetchall(sql, params) if keep(row)]
        if not rows:
            return []
        ids = [row["payment_id"] for row in rows]
        legs: dict[str, list[Leg]] = {pid: [] for pid in ids}
        placeholders = ",".join("?" * len(ids))
        for leg_row in await db.execute_fetchall(
                f"SELECT * FROM payment_legs WHERE payment_id IN ({placeholders}) "
                "ORDER BY payment_id, leg_index", ids):
            legs[leg_row["payment_id"]].append(_leg(leg_row))
        return [_payment(row, legs[row["payment_id"]]) for row in rows]

    async def record_attempt(self, attempt: ChargeAttempt) -> None:
        await self._write(lambda db: db.execute(
            "INSERT INTO charge_attempts (payment_id, leg_index, channel, attempt_no, "
            "started_at_us) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (attempt.payment_id, attempt.leg_index, attempt.channel, attempt.attempt_no,
             attempt.started_at_us)))

    async def attempted_channels(self, payment_id: str, leg_index: int) -> list[str]:
        return [row["channel"] for row in await self._reader.execute_fetchall(
            "SELECT channel FROM charge_attempts WHERE payment_id = ? AND leg_index = ? "
            "ORDER BY attempt_no", (payment_id, leg_index))]

    async def save_payment_outcome(self, payment: Payment) -> bool:
        def save(db: sqlite3.Connection) -> int | None:
            change = payment_outcome_change(
                payment, db.execute(_BEFORE_OUTCOME, (payment.payment_id,)))
            if change is None:
                return None
            version = write_payment_events(db, self._encoder, *change)
            db.executemany(
                "UPDATE payment_legs SET status = ?, channel = ?, channel_reference = ?, "
                "failure_reason = ?, failure_message = ?, failure_decline_code = ?, "
                "attempts = ?, latency_us = ? WHERE payment_id = ? AND leg_index = ?",
                leg_outcome_rows(payment))
            db.execute(
                "UPDATE payments SET version = ?, status = ?, failure_reason = ?, "
                "failure_message = ?, failure_decline_code = ?, completed_at_us = ? "
                "WHERE payment_id = ?",
                (version, *payment_outcome_row(payment)))
            return version

        version = await self._write(save)
        if version is None or payment.status is not PaymentStatus.PROCESSING:
            self._payments.finished(payment.payment_id)
        if version is None:
            return False
        payment.version = version
        return True

    # -- refunds ------------------------------------------------------------

    async def insert_refund(self, refund: Refund) -> Refund | None:
        def insert(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT INTO refunds (refund_id, payment_id, idempotency_key, fingerprint, "
                "reason, status, created_at_us) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (payment_id, idempotency_key) DO NOTHING",
                refund_row(refund))
            if cursor.rowcount == 0:
                return False
            for leg in refund.legs:
                reserved = db.execute(
                    "UPDATE payment_legs SET refund_pending_minor = refund_pending_minor + ? "
                    "WHERE payment_id = ? AND leg_index = ? AND status = 'SUCCEEDED' "
                    "AND refunded_minor + refund_pending_minor + ? <= amount_minor",
                    (leg.amount.amount_minor, refund.payment_id, leg.leg_index,
                     leg.amount.amount_minor))
                if reserved.rowcount != 1:
                    row = db.execute(
                        "SELECT amount_minor - refunded_minor - refund_pending_minor "
                        "FROM payment_legs WHERE payment_id = ? AND leg_index = ?",
                        (refund.payment_id, leg.leg_index)).fetchone()
                    raise RefundExceedsRefundable(leg.leg_index, leg.amount.amount_minor,
                                                  row[0] if row else 0)
                db.execute(
                    "INSERT INTO refund_legs (refund_id, leg_index, currency, amount_minor, "
                    "channel, status, channel_reference) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    refund_leg_row(refund, leg))
            write_refund_event(db, self._encoder, EventType.REFUND_CREATED, refund.refund_id)
            return True

        if await self._write(insert):
            self._refunds.started(refund.refund_id)
            return None
        return await self.get_refund_by_key(refund.payment_id, refund.idempotency_key)

    async def get_refund_by_key(self, payment_id: str, idempotency_key: str) -> Refund | None:
        return await self._load_refund(
            self._reader, "SELECT * FROM refunds WHERE payment_id = ? AND idempotency_key = ?",
            (payment_id, idempotency_key))

    async def list_pending_refunds(self) -> list[Refund]:
        takes = self._refunds.listing()
        ids = [row["refund_id"] for row in await self._reader.execute_fetchall(
            "SELECT refund_id, created_at_us FROM refunds WHERE status = 'PENDING' "
            "ORDER BY created_at_us") if takes(row["refund_id"], row["created_at_us"])]
        refunds = []
        for refund_id in ids:
            refund = await self._load_refund(
                self._reader, "SELECT * FROM refunds WHERE refund_id = ?", (refund_id,))
            assert refund is not None
            refunds.append(refund)
        return refunds

    def payment_may_be_running_elsewhere(self, payment: Payment) -> bool:
        # Of what list_processing_payments does not hand this process, the
        # part no run has stored an outcome for (its run ended otherwise).
        return (any(leg.status is LegStatus.PENDING for leg in payment.legs)
                and self._payments.may_be_running_elsewhere(payment.payment_id,
                                                            payment.received_at_us))

    def refund_may_be_running_elsewhere(self, refund: Refund) -> bool:
        return (refund.status is RefundStatus.PENDING
                and self._refunds.may_be_running_elsewhere(refund.refund_id,
                                                           refund.created_at_us))

    async def _load_refund(self, db: aiosqlite.Connection, sql: str, params: tuple) -> Refund | None:
        found = await db.execute_fetchall(sql, params)  # whole reads: see _load_payments
        if not found:
            return None
        row = found[0]
        return refund_from_rows(row, await db.execute_fetchall(
            "SELECT * FROM refund_legs WHERE refund_id = ? ORDER BY leg_index",
            (row["refund_id"],)))

    async def save_refund_outcome(self, refund: Refund) -> None:
        def save(db: sqlite3.Connection) -> None:
            status_before = db.execute("SELECT status FROM refunds WHERE refund_id = ?",
                                       (refund.refund_id,)).fetchone()["status"]
            for leg in refund.legs:
                settled = db.execute(
                    "UPDATE refund_legs SET status = ?, channel_reference = ?, "
                    "failure_reason = ?, failure_message = ? "
                    "WHERE refund_id = ? AND leg_index = ? AND status = 'PENDING'",
                    (leg.status.value, leg.channel_reference, *failure_columns(leg.failure)[:2],
                     refund.refund_id, leg.leg_index))
                if settled.rowcount != 1 or leg.status is RefundStatus.PENDING:
                    continue  # settled before, or not yet: the reservation stays as it is
                moved = leg.amount.amount_minor if leg.status is RefundStatus.SUCCEEDED else 0
                db.execute(
                    "UPDATE payment_legs SET refund_pending_minor = refund_pending_minor - ?, "
                    "refunded_minor = refunded_minor + ? WHERE payment_id = ? AND leg_index = ?",
                    (leg.amount.amount_minor, moved, refund.payment_id, leg.leg_index))
            db.execute("UPDATE refunds SET status = ? WHERE refund_id = ?",
                       (refund.status.value, refund.refund_id))
            event_type = refund_outcome_type(status_before, refund)
            if event_type is not None:
                write_refund_event(db, self._encoder, event_type, refund.refund_id)

        await self._write(save)
        if refund.status is not RefundStatus.PENDING:
            self._refunds.finished(refund.refund_id)
