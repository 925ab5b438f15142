"""PaymentStore on PostgreSQL, safe with several replicas on one database.

Each method is one transaction, committed (durably: postgres/database.py)
before it returns. What the SQLite store gets from having one writer, this
one gets from the database, so it holds across replicas:
- an idempotency key is taken by INSERT ... ON CONFLICT DO NOTHING on a
  unique constraint: of two replicas inserting the same key at once, one
  inserts, the other waits for its commit and gets the stored payment;
- a refund reserves each leg's amount with a conditional UPDATE (the row is
  locked, and the condition checked again, once a concurrent reservation
  commits), in the transaction that stores the refund: replicas can never
  reserve more than was captured (and a CHECK constraint says so too);
- a refund leg is settled only while still PENDING (again a conditional
  UPDATE), so its amount moves once, whoever settles it.

What the resolver lists as unfinished (list_processing_payments,
list_pending_refunds) is this replica's own unfinished work, and another
replica's only once no call can still be driving it (HANDOFF_AFTER_MS):
a payment in flight on another replica looks exactly like an abandoned one,
and settling it (GetCharge, then Void to fence the key) would fail a charge
the channel was about to capture. A replica restarted after a crash takes
its own earlier payments up after the same delay. The rule is both
engines' (storage/handoff.py); this store applies it in its queries.
"""

from __future__ import annotations

from paygrid_server.domain.model import limits
from paygrid_server.domain.model.payment import ChargeAttempt, Leg, LegStatus, Payment, PaymentStatus
from paygrid_server.domain.model.refund import Refund, RefundStatus
from paygrid_server.domain.model.event import EventType
from paygrid_server.domain.ports.event_log import SnapshotEncoder
from paygrid_server.domain.ports.payment_store import PageCursor, RefundExceedsRefundable
from paygrid_server.storage.event_rows import (
    payment_event_rows,
    payment_outcome_change,
    refund_outcome_type,
)
from paygrid_server.storage.failure_columns import failure_columns
from paygrid_server.storage.handoff import UnfinishedWork
from paygrid_server.storage.payment_rows import leg_from_row as _leg
from paygrid_server.storage.payment_rows import payment_from_row as _payment
from paygrid_server.storage.payment_rows import (
    refund_from_rows,
    refund_leg_row,
    refund_row,
)
from paygrid_server.storage.postgres.database import PostgresDatabase
from paygrid_server.storage.postgres.payment_events import (
    lock_before_outcome,
    lock_payment,
    write_refund_event,
)
from paygrid_server.storage.postgres import payment_statements


HANDOFF_AFTER_MS = limits.HANDOFF_AFTER_MS


def _updated(status: str) -> int:
    """Rows an UPDATE touched, from its command tag ("UPDATE 1")."""
    return int(status.rsplit(" ", 1)[1])


class PostgresPaymentStore:
    def __init__(self, database: PostgresDatabase, encoder: SnapshotEncoder) -> None:
        self._database = database
        self._encoder = encoder
        # Payments and refunds this replica stored and has not finished
        # (replicas always share the database: never all taken at once).
        self._payments = UnfinishedWork(shared=True)
        self._refunds = UnfinishedWork(shared=True)

    # -- payments -----------------------------------------------------------

    async def insert_payment(self, payment: Payment) -> Payment | None:
        # version 1: the payment.created event, written with it. The row is
        # this statement's own, and the object it is written from column for
        # column, so the event's snapshot is built from the object.
        created = payment_event_rows([EventType.PAYMENT_CREATED], payment, 0, self._encoder)
        payment.version = 0  # until it is stored
        async with self._database.transaction() as db:
            sql, params = payment_statements.insert_payment(payment, created)
            inserted = await db.fetchval(sql, *params)
        if inserted:
            payment.version = 1
            self._payments.started(payment.payment_id)
            return None
        # ON CONFLICT waited for the transaction holding the key to commit:
        # its payment is visible to this new statement.
        existing = await self._load_payments(
            "SELECT * FROM payments WHERE tenant_id = $1 AND idempotency_key = $2",
            payment.tenant_id, payment.idempotency_key)
        return existing[0]

    async def get_payment(self, payment_id: str) -> Payment | None:
        found = await self._load_payments(
            "SELECT * FROM payments WHERE payment_id = $1", payment_id)
        return found[0] if found else None

    async def list_payments(self, tenant_id: str, limit: int,
                            after: PageCursor | None) -> list[Payment]:
        if after is None:
            return await self._load_payments(
                "SELECT * FROM payments WHERE tenant_id = $1 "
                "ORDER BY received_at_us DESC, payment_id DESC LIMIT $2", tenant_id, limit)
        return await self._load_payments(
            "SELECT * FROM payments WHERE tenant_id = $1 "
            "AND (received_at_us, payment_id) < ($2, $3) "
            "ORDER BY received_at_us DESC, payment_id DESC LIMIT $4",
            tenant_id, after.received_at_us, after.payment_id, limit)

    async def list_processing_payments(self) -> list[Payment]:
        own, cutoff_us = self._payments.own_and_cutoff()
        return await self._load_payments(
            "SELECT * FROM payments WHERE status = 'PROCESSING' "
            "AND (payment_id = ANY($1::text[]) OR received_at_us < $2) ORDER BY received_at_us",
            own, cutoff_us)

    async def _load_payments(self, sql: str, *params) -> list[Payment]:
        # One snapshot for a payment and its legs.
        async with self._database.transaction("repeatable_read", readonly=True) as db:
            rows = await db.fetch(sql, *params)
            if not rows:
                return []
            ids = [row["payment_id"] for row in rows]
            leg_rows = await db.fetch(
                "SELECT * FROM payment_legs WHERE payment_id = ANY($1::text[]) "
                "ORDER BY payment_id, leg_index", ids)
        legs: dict[str, list[Leg]] = {pid: [] for pid in ids}
        for leg_row in leg_rows:
            legs[leg_row["payment_id"]].append(_leg(leg_row))
        return [_payment(row, legs[row["payment_id"]]) for row in rows]

    async def record_attempt(self, attempt: ChargeAttempt) -> None:
        await self._database.write(
            "execute", "INSERT INTO charge_attempts (payment_id, leg_index, channel, attempt_no, "
            "started_at_us) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            attempt.payment_id, attempt.leg_index, attempt.channel, attempt.attempt_no,
            attempt.started_at_us)

    async def attempted_channels(self, payment_id: str, leg_index: int) -> list[str]:
        rows = await self._database.read(
            "fetch", "SELECT channel FROM charge_attempts WHERE payment_id = $1 AND leg_index = $2 "
            "ORDER BY attempt_no", payment_id, leg_index)
        return [row["channel"] for row in rows]

    async def save_payment_outcome(self, payment: Payment) -> bool:
        async with self._database.transaction() as db:
            change = payment_outcome_change(
                payment, await lock_before_outcome(db, payment.payment_id))
            if change is None:
                self._payments.finished(payment.payment_id)
                return False
            types, after, version_before = change
            rows = payment_event_rows(types, after, version_before, self._encoder) if types else []
            sql, params = payment_statements.save_outcome(payment, after.version, rows)
            await db.execute(sql, *params)
            payment.version = after.version
        if payment.status is not PaymentStatus.PROCESSING:
            self._payments.finished(payment.payment_id)
        return True

    def payment_may_be_running_elsewhere(self, payment: Payment) -> bool:
        # Of what list_processing_payments does not hand this replica, the
        # part no run has stored an outcome for (its run ended otherwise).
        return (any(leg.status is LegStatus.PENDING for leg in payment.legs)
                and self._payments.may_be_running_elsewhere(payment.payment_id,
                                                            payment.received_at_us))

    # -- refunds ------------------------------------------------------------

    async def insert_refund(self, refund: Refund) -> Refund | None:
        async with self._database.transaction() as db:
            # The payment row first, as every writer locks it: one lock order.
            owner = await lock_payment(db, refund.payment_id)
            inserted = await db.fetchval(
                "INSERT INTO refunds (refund_id, payment_id, idempotency_key, fingerprint, "
                "reason, status, created_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT (payment_id, idempotency_key) DO NOTHING RETURNING true",
                *refund_row(refund))
            for leg in refund.legs if inserted else ():
                # Under READ COMMITTED an UPDATE that waited for another
                # replica's reservation checks its WHERE again on the row
                # as committed: the sum can never pass the capture.
                reserved = _updated(await db.execute(
                    "UPDATE payment_legs SET refund_pending_minor = refund_pending_minor + $1 "
                    "WHERE payment_id = $2 AND leg_index = $3 AND status = 'SUCCEEDED' "
                    "AND refunded_minor + refund_pending_minor + $1 <= amount_minor",
                    leg.amount.amount_minor, refund.payment_id, leg.leg_index))
                if reserved != 1:
                    refundable = await db.fetchval(
                        "SELECT amount_minor - refunded_minor - refund_pending_minor "
                        "FROM payment_legs WHERE payment_id = $1 AND leg_index = $2",
                        refund.payment_id, leg.leg_index)
                    # Raised inside the transaction: the refund row goes too.
                    raise RefundExceedsRefundable(leg.leg_index, leg.amount.amount_minor,
                                                  refundable or 0)
                await db.execute(
                    "INSERT INTO refund_legs (refund_id, leg_index, currency, amount_minor, "
                    "channel, status, channel_reference) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    *refund_leg_row(refund, leg))
            if inserted:
                await write_refund_event(db, self._encoder, EventType.REFUND_CREATED,
                                         refund.refund_id, owner)
        if inserted:
            self._refunds.started(refund.refund_id)
            return None
        return await self.get_refund_by_key(refund.payment_id, refund.idempotency_key)

    async def get_refund_by_key(self, payment_id: str, idempotency_key: str) -> Refund | None:
        return await self._load_refund(
            "SELECT * FROM refunds WHERE payment_id = $1 AND idempotency_key = $2",
            payment_id, idempotency_key)

    async def list_pending_refunds(self) -> list[Refund]:
        own, cutoff_us = self._refunds.own_and_cutoff()
        ids = [row["refund_id"] for row in await self._database.read(
            "fetch", "SELECT refund_id FROM refunds WHERE status = 'PENDING' "
            "AND (refund_id = ANY($1::text[]) OR created_at_us < $2) ORDER BY created_at_us",
            own, cutoff_us)]
        refunds = []
        for refund_id in ids:
            refund = await self._load_refund("SELECT * FROM refunds WHERE refund_id = $1",
                                             refund_id)
            if refund is not None:
                refunds.append(refund)
        return refunds

    def refund_may_be_running_elsewhere(self, refund: Refund) -> bool:
        # The complement of what list_pending_refunds hands this replica.
        return (refund.status is RefundStatus.PENDING
                and self._refunds.may_be_running_elsewhere(refund.refund_id,
                                                           refund.created_at_us))

    async def _load_refund(self, sql: str, *params) -> Refund | None:
        async with self._database.transaction("repeatable_read", readonly=True) as db:
            row = await db.fetchrow(sql, *params)
            if row is None:
                return None
            leg_rows = await db.fetch(
                "SELECT * FROM refund_legs WHERE refund_id = $1 ORDER BY leg_index",
                row["refund_id"])
        return refund_from_rows(row, leg_rows)

    async def save_refund_outcome(self, refund: Refund) -> None:
        async with self._database.transaction() as db:
            owner = await lock_payment(db, refund.payment_id)
            status_before = await db.fetchval("SELECT status FROM refunds WHERE refund_id = $1",
                                              refund.refund_id)
            for leg in refund.legs:
                # Only while PENDING: of two replicas settling the same leg,
                # the second waits for the first, then finds it settled.
                settled = _updated(await db.execute(
                    "UPDATE refund_legs SET status = $1, channel_reference = $2, "
                    "failure_reason = $3, failure_message = $4 "
                    "WHERE refund_id = $5 AND leg_index = $6 AND status = 'PENDING'",
                    leg.status.value, leg.channel_reference, *failure_columns(leg.failure)[:2],
                    refund.refund_id, leg.leg_index))
                if settled != 1 or leg.status is RefundStatus.PENDING:
                    continue  # settled before, or not yet: the reservation stays as it is
                moved = leg.amount.amount_minor if leg.status is RefundStatus.SUCCEEDED else 0
                await db.execute(
                    "UPDATE payment_legs SET refund_pending_minor = refund_pending_minor - $1, "
                    "refunded_minor = refunded_minor + $2 WHERE payment_id = $3 AND leg_index = $4",
                    leg.amount.amount_minor, moved, refund.payment_id, leg.leg_index)
            await db.execute("UPDATE refunds SET status = $1 WHERE refund_id = $2",
                             refund.status.value, refund.refund_id)
            event_type = refund_outcome_type(status_before, refund)
            if event_type is not None:
                await write_refund_event(db, self._encoder, event_type, refund.refund_id, owner)
        if refund.status is not RefundStatus.PENDING:
            self._refunds.finished(refund.refund_id)
