"""A payment's outcome in SQLite after this store's own insert of it: the
payment row updated first, guarded by the version the insert wrote, without
reading the state before (storage/sqlite/payment_outcome.py). It must write
what the outcome that reads the state writes, and read the state whenever
another writer (a worker sharing the file, its recovery) changed the
payment since the insert."""

from __future__ import annotations

import copy
import itertools
import sqlite3
from pathlib import Path
from typing import AsyncIterator

import pytest

from paygrid_server.domain.model import clock
from paygrid_server.domain.model.event import EventType
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import (
    Failure,
    FailureReason,
    Leg,
    LegRequest,
    LegStatus,
    Payment,
    PaymentMode,
    PaymentStatus,
)
from paygrid_server.storage import event_rows
from paygrid_server.storage.sqlite.database import SqliteDatabase
from paygrid_server.storage.sqlite.payment_store import SqlitePaymentStore
from paygrid_server.transport.event_messages import ProtobufSnapshots

pytestmark = pytest.mark.sqlite_only


def _payment(key: str, legs: int, mode: PaymentMode) -> Payment:
    return Payment(f"pay_{key}", "dev", key, "fp", "acct_1", mode,
                   [Leg(i, LegRequest(f"merchant_{i}", Money("EUR", 1_000 + i), "", ""),
                        first_channel="card") for i in range(legs)], {}, 1)


def _settle(payment: Payment, statuses: list[LegStatus], status: PaymentStatus) -> None:
    for leg, leg_status in zip(payment.legs, statuses):
        leg.status, leg.channel, leg.attempts, leg.latency_us = leg_status, "card", 1, 700
        if leg_status is LegStatus.SUCCEEDED:
            leg.channel_reference = f"ref_{leg.index}"
        elif leg_status is not LegStatus.PENDING:
            leg.failure = Failure(FailureReason.DECLINED, "declined", "51")
    payment.status = status
    if status.is_final:
        payment.completed_at_us = 9_000


# Each payment's outcomes in turn: one leg paid; two independent legs, one
# declined; all-or-nothing left unresolved, then settled by a later save.
_STORIES = [
    ("one", 1, PaymentMode.ALL_OR_NOTHING,
     [([LegStatus.SUCCEEDED], PaymentStatus.SUCCEEDED)]),
    ("two", 2, PaymentMode.INDEPENDENT,
     [([LegStatus.SUCCEEDED, LegStatus.FAILED], PaymentStatus.PARTIALLY_SUCCEEDED)]),
    ("unresolved", 2, PaymentMode.ALL_OR_NOTHING,
     [([LegStatus.SUCCEEDED, LegStatus.UNKNOWN], PaymentStatus.PROCESSING),
      ([LegStatus.VOIDED, LegStatus.FAILED], PaymentStatus.FAILED)]),
]


def _dump(path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as db:
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                for table in ("payments", "payment_legs", "charge_attempts", "events")}


async def _run_stories(path: Path, outcome_store_inserted: bool,
                       monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The stories on a fresh file; the outcomes saved by the store that
    inserted the payments, or by another store on the file (which has to
    read their state). Returns the writer's statements of the outcomes."""
    ids = itertools.count()
    monkeypatch.setattr(event_rows, "new_event_id", lambda: f"event_{next(ids)}")
    monkeypatch.setattr(clock, "now_us", lambda: 5_000)
    database = await SqliteDatabase.open(path)
    statements: list[str] = []
    try:
        inserting = SqlitePaymentStore(database, ProtobufSnapshots())
        saving = inserting if outcome_store_inserted else SqlitePaymentStore(
            database, ProtobufSnapshots())
        for key, legs, mode, outcomes in _STORIES:
            payment = _payment(key, legs, mode)
            assert await inserting.insert_payment(payment) is None
            await database.write(lambda db: db.set_trace_callback(statements.append))
            for statuses, status in outcomes:
                _settle(payment, statuses, status)
                assert await saving.save_payment_outcome(copy.deepcopy(payment))
            await database.write(lambda db: db.set_trace_callback(None))
    finally:
        await database.close()
    return statements


async def test_an_outcome_after_its_own_insert_writes_what_one_that_reads_the_state_writes(
        tmp_path, monkeypatch) -> None:
    read = await _run_stories(tmp_path / "read.sqlite3", False, monkeypatch)
    remembered = await _run_stories(tmp_path / "remembered.sqlite3", True, monkeypatch)
    assert _dump(tmp_path / "remembered.sqlite3") == _dump(tmp_path / "read.sqlite3")
    # Only the unresolved payment's second outcome reads (its first is not
    # the insert's state any more).
    assert sum(s.startswith("SELECT") for s in read) == 4
    assert sum(s.startswith("SELECT") for s in remembered) == 1


@pytest.fixture
async def database(tmp_path) -> AsyncIterator[SqliteDatabase]:
    database = await SqliteDatabase.open(tmp_path / "paygrid.sqlite3")
    yield database
    await database.close()


async def _inserted_then_saved_elsewhere(database: SqliteDatabase, leg_status: LegStatus,
                                         status: PaymentStatus
                                         ) -> tuple[SqlitePaymentStore, Payment]:
    """A payment inserted by one store, then given an outcome by another on
    the same file (another worker's recovery); the inserting store and its
    payment object, which that outcome did not touch."""
    inserting = SqlitePaymentStore(database, ProtobufSnapshots())
    other_worker = SqlitePaymentStore(database, ProtobufSnapshots())
    payment = _payment(f"changed_{leg_status.value}", 1, PaymentMode.ALL_OR_NOTHING)
    assert await inserting.insert_payment(payment) is None
    elsewhere = await other_worker.get_payment(payment.payment_id)
    _settle(elsewhere, [leg_status], status)
    assert await other_worker.save_payment_outcome(elsewhere)
    return inserting, payment


async def test_a_payment_changed_elsewhere_since_the_insert_gets_its_events_from_the_state_read(
        database) -> None:
    inserting, payment = await _inserted_then_saved_elsewhere(
        database, LegStatus.UNKNOWN, PaymentStatus.PROCESSING)
    _settle(payment, [LegStatus.SUCCEEDED], PaymentStatus.SUCCEEDED)
    assert await inserting.save_payment_outcome(payment)
    assert payment.version == 4
    rows = await database.reader.execute_fetchall(
        "SELECT type, aggregate_version FROM events ORDER BY seq")
    assert [tuple(row) for row in rows] == [
        (EventType.PAYMENT_CREATED.cloud_type, 1), (EventType.PAYMENT_LEG_UNKNOWN.cloud_type, 2),
        (EventType.PAYMENT_LEG_SUCCEEDED.cloud_type, 3),
        (EventType.PAYMENT_SUCCEEDED.cloud_type, 4)]
    stored = await inserting.get_payment(payment.payment_id)
    assert (stored.status, stored.version) == (PaymentStatus.SUCCEEDED, 4)


async def test_a_payment_finished_by_another_writer_since_the_insert_keeps_that_outcome(
        database) -> None:
    inserting, payment = await _inserted_then_saved_elsewhere(
        database, LegStatus.FAILED, PaymentStatus.FAILED)
    _settle(payment, [LegStatus.SUCCEEDED], PaymentStatus.SUCCEEDED)
    assert not await inserting.save_payment_outcome(payment)
    stored = await inserting.get_payment(payment.payment_id)
    assert (stored.status, stored.version, stored.legs[0].status) == (
        PaymentStatus.FAILED, 3, LegStatus.FAILED)
