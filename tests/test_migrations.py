"""Schema migrations: a database made before tenants existed upgrades in
place, its payments and batches owned by the dev tenant, nothing lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import payment_service_pb2 as pb
from paygrid_server.storage.sqlite_database import SqliteDatabase
from paygrid_server.storage.sqlite_migrations import migration_scripts
from tests.batch_client import batch_stub

BEFORE_TENANTS = ("0001_payments.sql", "0002_batches.sql")


def _database_before_tenants(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, "
                   "applied_at_us INTEGER NOT NULL) STRICT")
        for version, script in migration_scripts():
            if version in BEFORE_TENANTS:
                db.executescript(script)
                db.execute("INSERT INTO schema_migrations VALUES (?, 0)", (version,))
        db.execute("INSERT INTO payments VALUES ('pay_old', 'order-old', 'f', 'acct_1', "
                   "'ALL_OR_NOTHING', 'SUCCEEDED', '{}', NULL, NULL, NULL, 1, 2)")
        db.execute("INSERT INTO payment_legs VALUES ('pay_old', 0, 'merchant_1', 'EUR', 500, '', "
                   "'', 'SUCCEEDED', 'card', 'ch_1', NULL, NULL, NULL, 1, 10, 0, 0)")
        db.execute("INSERT INTO batches (batch_id, uid, payer, grouping, max_group_size, "
                   "parallelism, fingerprint, status, submissions, created_at_us, "
                   "completed_at_us, submission_started_at_us) VALUES ('payroll-old', "
                   "'bat_old', 'acct_1', 'CHANNEL_AND_CURRENCY', 100, 4, 'f', 'COMPLETED', 1, "
                   "1, 3, 1)")
        db.execute("INSERT INTO batch_groups VALUES ('payroll-old', 1, 'card/EUR', 1, 1, 3)")
        db.execute("INSERT INTO batch_items VALUES ('payroll-old', 1, 'e1', 'payee_1', 'EUR', "
                   "700, '', NULL, 'card', 'd', 1, 'SUCCEEDED', 1, 1, 'ch_2', NULL, NULL, NULL)")


async def test_a_database_from_before_tenants_upgrades_and_still_serves(
        tmp_path: Path, start_paygrid) -> None:
    path = tmp_path / "old.sqlite3"
    _database_before_tenants(path)
    database = await SqliteDatabase.open(path)
    await database.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute("SELECT tenant_id, idempotency_key FROM payments").fetchall() == [
            ("dev", "order-old")]
        assert db.execute("SELECT batch_uid, reference FROM batch_items").fetchall() == [
            ("bat_old", "e1")]
        assert [v for (v,) in db.execute("SELECT version FROM schema_migrations ORDER BY 1")] \
            == [v for v, _ in migration_scripts()]

    paygrid = await start_paygrid(database_path=path)
    payment = (await paygrid.stub.GetPayment(pb.GetPaymentRequest(payment_id="pay_old"))).payment
    assert (payment.idempotency_key, payment.legs[0].amount.amount_minor) == ("order-old", 500)
    report = (await batch_stub(paygrid.channel).GetBatch(
        batch_pb.GetBatchRequest(batch_id="payroll-old"))).batch
    assert (report.counts.total, report.counts.succeeded) == (1, 1)


async def test_opening_twice_applies_nothing_again(tmp_path: Path) -> None:
    path = tmp_path / "twice.sqlite3"
    for _ in range(2):
        database = await SqliteDatabase.open(path)
        await database.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == \
            len(migration_scripts())
