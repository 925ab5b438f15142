"""The event log's cursor and versions under concurrency, on PostgreSQL
replicas: a transaction that commits late is still delivered (seq is given
after commit, never the insert-order id), and racing writers on two replicas
give one payment's events versions 1..N without gaps or duplicates. On both
engines: an event of a change that rolls back does not exist."""

from __future__ import annotations

import asyncio
import uuid
from typing import AsyncIterator

import asyncpg
import pytest

from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import (
    Leg,
    LegRequest,
    LegStatus,
    Payment,
    PaymentMode,
    PaymentStatus,
)
from paygrid_server.domain.model.refund import Refund, RefundLeg, RefundStatus
from paygrid_server.domain.ports.payment_store import RefundExceedsRefundable
from paygrid_server.storage.postgres.database import PostgresDatabase, PostgresLimits
from paygrid_server.storage.postgres.event_log import PostgresEventLog
from paygrid_server.storage.postgres.event_sequencer import sequence_events
from paygrid_server.storage.postgres.payment_store import PostgresPaymentStore
from paygrid_server.storage.sqlite.database import SqliteDatabase
from paygrid_server.storage.sqlite.event_log import SqliteEventLog
from paygrid_server.storage.sqlite.payment_store import SqlitePaymentStore
from paygrid_server.transport.event_messages import ProtobufSnapshots
from tests.support.postgres_databases import postgres_rows, require_postgres

CAPTURED_MINOR = 1_000


@pytest.fixture
async def replicas(postgres_databases) -> AsyncIterator[tuple[str, list[PostgresDatabase]]]:
    require_postgres()
    dsn = await postgres_databases.create()
    databases = [await PostgresDatabase.open(dsn, PostgresLimits(pool_max_connections=4))
                 for _ in range(2)]
    yield dsn, databases
    for database in databases:
        await database.close()


def _payment(key: str) -> Payment:
    leg = Leg(0, LegRequest("merchant_1", Money("EUR", CAPTURED_MINOR), "", ""),
              channel="card", first_channel="card")
    return Payment(f"pay_{uuid.uuid4().hex}", "dev", key, "fp", "acct_1",
                   PaymentMode.ALL_OR_NOTHING, [leg], {}, 1)


async def _captured(store) -> Payment:
    payment = _payment(f"paid-{uuid.uuid4().hex}")
    assert await store.insert_payment(payment) is None
    payment.legs[0].status, payment.status = LegStatus.SUCCEEDED, PaymentStatus.SUCCEEDED
    await store.save_payment_outcome(payment)
    return payment


def _refund(payment_id: str, key: str, amount_minor: int) -> Refund:
    return Refund(f"ref_{uuid.uuid4().hex}", payment_id, key, f"fp-{key}", "",
                  [RefundLeg(0, Money("EUR", amount_minor), "card")], 1)


async def test_a_transaction_committed_late_is_still_delivered_after_the_cursor(replicas) -> None:
    dsn, databases = replicas
    store = PostgresPaymentStore(databases[0], ProtobufSnapshots())
    log = PostgresEventLog(databases[1])
    late = await asyncpg.connect(dsn)
    try:
        # A: takes its event id first, and holds its transaction open.
        held = late.transaction()
        await held.start()
        late_id = await late.fetchval(
            "INSERT INTO events (event_id, type, tenant_id, aggregate_type, aggregate_id, "
            "aggregate_version, payload_type, payload, occurred_at_us) "
            "VALUES ($1, 'io.paygrid.payment.created.v1', 'dev', 'payment', 'pay_late', 1, "
            "'paygrid.v1.Payment', ''::bytea, 1) RETURNING id", "evt-late")
        # B: a real payment, committed while A is open.
        early = _payment("k-early")
        assert await store.insert_payment(early) is None
        seen = await log.list_events("dev", 0, "", 100)  # runs the sequencer
        assert [e.aggregate_id for e in seen] == [early.payment_id]
        cursor = seen[-1].seq
        # The hazard is real: A's id is below B's, so "after B's id" skips A.
        assert postgres_rows(dsn, "SELECT id > ? FROM events WHERE event_id = ?",
                             (late_id, seen[-1].event_id)) == [(True,)]
        await held.commit()
        after = await log.list_events("dev", cursor, "", 100)
        assert [e.event_id for e in after] == ["evt-late"]
        assert after[0].seq > cursor
    finally:
        await late.close()


async def test_the_sequencer_numbers_nothing_twice(replicas) -> None:
    dsn, databases = replicas
    stores = [PostgresPaymentStore(d, ProtobufSnapshots()) for d in databases]
    await asyncio.gather(*(stores[n % 2].insert_payment(_payment(f"k-{n}")) for n in range(20)))
    numbered = await asyncio.gather(*(sequence_events(databases[n % 2]) for n in range(6)))
    assert sum(numbered) == 20  # each row once, whichever run got to it
    assert await sequence_events(databases[0]) == 0
    assert postgres_rows(dsn, "SELECT min(seq), max(seq), count(DISTINCT seq) FROM events") \
        == [(1, 20, 20)]


async def test_refunds_racing_on_two_replicas_take_versions_without_gaps(replicas) -> None:
    dsn, databases = replicas
    stores = [PostgresPaymentStore(d, ProtobufSnapshots()) for d in databases]
    payment = await _captured(stores[0])
    refunds = [_refund(payment.payment_id, f"r-{n}", 100) for n in range(8)]

    async def refund_and_settle(n: int) -> None:
        store = stores[n % 2]
        assert await store.insert_refund(refunds[n]) is None
        refunds[n].legs[0].status = refunds[n].status = RefundStatus.SUCCEEDED
        await store.save_refund_outcome(refunds[n])

    await asyncio.gather(*(refund_and_settle(n) for n in range(8)))
    events = await PostgresEventLog(databases[1]).list_events("dev", 0, "", 1000)
    mine = [e for e in events if e.aggregate_id == payment.payment_id]
    # created, leg.succeeded, succeeded, then created + succeeded per refund.
    assert [e.aggregate_version for e in mine] == list(range(1, 3 + 2 * 8 + 1))
    assert postgres_rows(dsn, "SELECT version FROM payments WHERE payment_id = ?",
                         (payment.payment_id,)) == [(3 + 2 * 8,)]


async def test_a_refund_that_rolls_back_leaves_no_event(tmp_path, storage_engine,
                                                        postgres_databases) -> None:
    if storage_engine == "postgresql":
        database = await PostgresDatabase.open(await postgres_databases.create())
        store, log = PostgresPaymentStore(database, ProtobufSnapshots()), PostgresEventLog(database)
    else:
        database = await SqliteDatabase.open(tmp_path / "events.sqlite3")
        store, log = SqlitePaymentStore(database, ProtobufSnapshots()), SqliteEventLog(database)
    try:
        payment = await _captured(store)
        # Exactly the capture is accepted; one minor unit past it is refused.
        with pytest.raises(RefundExceedsRefundable):
            await store.insert_refund(_refund(payment.payment_id, "too-much", CAPTURED_MINOR + 1))
        assert [e.type for e in await log.list_events("dev", 0, "", 100)] == [
            "io.paygrid.payment.created.v1", "io.paygrid.payment.leg.succeeded.v1",
            "io.paygrid.payment.succeeded.v1"]
        assert await store.insert_refund(_refund(payment.payment_id, "all", CAPTURED_MINOR)) is None
        events = await log.list_events("dev", 0, "", 100)
        assert [(e.type, e.aggregate_version) for e in events[3:]] == [
            ("io.paygrid.payment.refund.created.v1", 4)]
        assert (await store.get_payment(payment.payment_id)).version == 4
    finally:
        await database.close()


async def test_readers_arriving_together_share_sequencer_runs(replicas, monkeypatch) -> None:
    """50 readers at once (a woken crowd of watchers): two sequencer runs,
    not 50, and every reader still sees the committed event."""
    from paygrid_server.storage.postgres import event_log as event_log_module

    dsn, databases = replicas
    runs = []
    real = event_log_module.sequence_events

    async def counted(database):
        runs.append(database)
        return await real(database)

    monkeypatch.setattr(event_log_module, "sequence_events", counted)
    store = PostgresPaymentStore(databases[0], ProtobufSnapshots())
    assert await store.insert_payment(_payment("k-crowd")) is None
    log = PostgresEventLog(databases[1])
    pages = await asyncio.gather(*(log.list_events("dev", 0, "", 10) for _ in range(50)))
    assert all(len(page) == 1 for page in pages)
    assert len(runs) == 2


async def test_a_final_payment_is_never_rewritten_by_a_second_outcome(
        tmp_path, storage_engine, postgres_databases) -> None:
    """Two runs settling one payment (two replicas' recoveries after a
    hand-off, seen in the chaos run): the first final outcome stands; the
    second writes nothing, so the row never changes without an event."""
    if storage_engine == "postgresql":
        dsn = await postgres_databases.create()
        databases = [await PostgresDatabase.open(dsn) for _ in range(2)]
        stores = [PostgresPaymentStore(d, ProtobufSnapshots()) for d in databases]
        log = PostgresEventLog(databases[0])
    else:
        databases = [await SqliteDatabase.open(tmp_path / "events.sqlite3")]
        stores = [SqlitePaymentStore(databases[0], ProtobufSnapshots())] * 2
        log = SqliteEventLog(databases[0])
    try:
        first = _payment("settled-twice")
        assert await stores[0].insert_payment(first) is None
        second = await stores[1].get_payment(first.payment_id)
        first.legs[0].status, first.status = LegStatus.SUCCEEDED, PaymentStatus.SUCCEEDED
        first.completed_at_us = 1_000
        saved = [await stores[0].save_payment_outcome(first)]
        second.legs[0].status, second.status = LegStatus.FAILED, PaymentStatus.FAILED
        second.completed_at_us = 2_000
        saved.append(await stores[1].save_payment_outcome(second))
        stored = await stores[1].get_payment(first.payment_id)
        assert (stored.status, stored.legs[0].status, stored.completed_at_us, stored.version) == (
            PaymentStatus.SUCCEEDED, LegStatus.SUCCEEDED, 1_000, 3)
        assert [e.aggregate_version for e in await log.list_events("dev", 0, "", 100)] == [1, 2, 3]
        assert saved == [True, False]
    finally:
        for database in databases:
            await database.close()
