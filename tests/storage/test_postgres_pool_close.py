"""Closing the PostgreSQL pool is bounded (issue 14, item 8): a connection
held by work a shutdown cut off must not keep the process from exiting."""

from __future__ import annotations

import asyncio
import time

import pytest

from paygrid_server.storage.postgres.database import PostgresDatabase

POOL_CLOSE_TIMEOUT_S = 2.0  # postgres_database.py's (not imported: runs on old code too)

pytestmark = pytest.mark.postgresql_only


async def test_close_returns_even_while_a_connection_is_held(storage_engine: str,
                                                            postgres_databases) -> None:
    database = await PostgresDatabase.open(await postgres_databases.create())
    await database.pool.acquire()  # never released, as by work cut off
    started = time.monotonic()
    await asyncio.wait_for(database.close(), POOL_CLOSE_TIMEOUT_S + 5)
    assert time.monotonic() - started < POOL_CLOSE_TIMEOUT_S + 2
