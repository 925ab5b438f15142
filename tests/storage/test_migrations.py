"""Schema migrations, on both engines: a database made before tenants
existed upgrades in place, its payments and batches owned by the dev tenant,
nothing lost; opening again applies nothing; on PostgreSQL, replicas
starting at once migrate once."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import payment_service_pb2 as pb
from paygrid_server.storage.postgres import schema_migrations as postgres_migrations
from paygrid_server.storage.sqlite import schema_migrations as sqlite_migrations
from paygrid_server.storage.postgres.database import PostgresDatabase, PostgresLimits
from paygrid_server.storage.sqlite.database import SqliteDatabase
from tests.support.batch_client import batch_stub
from tests.support.postgres_databases import postgres_rows, require_postgres

BEFORE_TENANTS = ("0001_payments.sql", "0002_batches.sql")
# Positional, so they insert the same rows into either engine's 0002 schema.
OLD_ROWS = (
    "INSERT INTO payments VALUES ('pay_old', 'order-old', 'f', 'acct_1', "
    "'ALL_OR_NOTHING', 'SUCCEEDED', '{}', NULL, NULL, NULL, 1, 2)",
    "INSERT INTO payment_legs VALUES ('pay_old', 0, 'merchant_1', 'EUR', 500, '', "
    "'', 'SUCCEEDED', 'card', 'ch_1', NULL, NULL, NULL, 1, 10, 0, 0)",
    "INSERT INTO batches (batch_id, uid, payer, grouping, max_group_size, "
    "parallelism, fingerprint, status, submissions, created_at_us, "
    "completed_at_us, submission_started_at_us) VALUES ('payroll-old', "
    "'bat_old', 'acct_1', 'CHANNEL_AND_CURRENCY', 100, 4, 'f', 'COMPLETED', 1, "
    "1, 3, 1)",
    "INSERT INTO batch_groups VALUES ('payroll-old', 1, 'card/EUR', 1, 1, 3)",
    "INSERT INTO batch_items VALUES ('payroll-old', 1, 'e1', 'payee_1', 'EUR', "
    "700, '', NULL, 'card', 'd', 1, 'SUCCEEDED', 1, 1, 'ch_2', NULL, NULL, NULL)",
)


def _sqlite_before_tenants(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, "
                   "applied_at_us INTEGER NOT NULL) STRICT")
        for version, script in sqlite_migrations.migration_scripts():
            if version in BEFORE_TENANTS:
                db.executescript(script)
                db.execute("INSERT INTO schema_migrations VALUES (?, 0)", (version,))
        for sql in OLD_ROWS:
            db.execute(sql)


async def _postgres_before_tenants(dsn: str) -> None:
    db = await asyncpg.connect(dsn)
    try:
        await db.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, "
                         "applied_at_us BIGINT NOT NULL)")
        for version, script in postgres_migrations.migration_scripts():
            if version in BEFORE_TENANTS:
                await db.execute(script)
                await db.execute("INSERT INTO schema_migrations VALUES ($1, 0)", version)
        for sql in OLD_ROWS:
            await db.execute(sql)
    finally:
        await db.close()


def test_both_engines_have_the_same_migration_versions() -> None:
    assert [v for v, _ in postgres_migrations.migration_scripts()] == \
        [v for v, _ in sqlite_migrations.migration_scripts()]


async def test_a_database_from_before_tenants_upgrades_and_still_serves(
        tmp_path: Path, start_paygrid, storage_engine: str, postgres_databases) -> None:
    if storage_engine == "postgresql":
        dsn = await postgres_databases.create()
        await _postgres_before_tenants(dsn)
        database = await PostgresDatabase.open(dsn, PostgresLimits(pool_max_connections=1))
        await database.close()

        def rows(sql: str) -> list[tuple]:
            return postgres_rows(dsn, sql)
        versions = [v for v, _ in postgres_migrations.migration_scripts()]
        settings = {"postgres_dsn": dsn}
    else:
        path = tmp_path / "old.sqlite3"
        _sqlite_before_tenants(path)
        database = await SqliteDatabase.open(path)
        await database.close()

        def rows(sql: str) -> list[tuple]:
            with sqlite3.connect(path) as db:
                return db.execute(sql).fetchall()
        assert rows("PRAGMA foreign_key_check") == []
        versions = [v for v, _ in sqlite_migrations.migration_scripts()]
        settings = {"database_path": path}
    assert rows("SELECT tenant_id, idempotency_key FROM payments") == [("dev", "order-old")]
    items_by_uid = ("SELECT batch_uid, reference FROM batch_items" if storage_engine == "postgresql"
                    else "SELECT b.uid, i.reference FROM batch_items i "
                         "JOIN batches b ON b.item_key = i.batch_key")
    assert rows(items_by_uid) == [("bat_old", "e1")]
    assert [v for (v,) in rows("SELECT version FROM schema_migrations ORDER BY 1")] == versions

    paygrid = await start_paygrid(**settings)
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
            len(sqlite_migrations.migration_scripts())


async def test_replicas_starting_at_once_migrate_once(postgres_databases) -> None:
    require_postgres()
    dsn = await postgres_databases.create()
    # Each its own pool, as separate replicas would have; all start together.
    replicas = await asyncio.gather(*(
        PostgresDatabase.open(dsn, PostgresLimits(pool_max_connections=1)) for _ in range(4)))
    for replica in replicas:
        await replica.close()
    assert postgres_rows(dsn, "SELECT version, count(*) FROM schema_migrations "
                              "GROUP BY version ORDER BY version") == [
        (v, 1) for v, _ in postgres_migrations.migration_scripts()]
    database = await PostgresDatabase.open(dsn)  # and once more, later: nothing to do
    await database.close()
    assert postgres_rows(dsn, "SELECT count(*) FROM schema_migrations") == [
        (len(postgres_migrations.migration_scripts()),)]
