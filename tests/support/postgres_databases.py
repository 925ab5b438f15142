"""PostgreSQL for the tests: where it is, whether it answers, and a fresh
schema per server so tests never see each other's rows.

A schema, not a database: CREATE DATABASE takes about 270 ms here (it
copies and WAL-logs the template), CREATE SCHEMA about 1 ms, and with a
few hundred PostgreSQL tests that is most of their cost. The server's DSN
names the schema as its search_path, so paygrid, its migrations included,
sees only that schema's tables, exactly as in a database of its own.

PAYGRID_TEST_POSTGRES_DSN names a database the tests may connect to and
create databases from (default postgresql://postgres@127.0.0.1:5432/test;
.ci/run starts the server when it is not running). When it does not answer,
PostgreSQL variants are skipped with the reason, except under CI=true, where
they fail: CI must not pass by skipping them.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import threading
import uuid
from urllib.parse import urlsplit

import asyncpg
import pytest

ENGINES = ("sqlite", "postgresql")
DSN_ENV = "PAYGRID_TEST_POSTGRES_DSN"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT_S = 5.0


def admin_dsn() -> str:
    return os.environ.get(DSN_ENV) or DEFAULT_DSN


def dsn_for(schema: str) -> str:
    """The admin DSN, in `schema` only (search_path: asyncpg passes an
    unknown query parameter on as a server setting)."""
    parts = urlsplit(admin_dsn())
    query = "&".join(q for q in (parts.query, f"search_path={schema}") if q)
    return parts._replace(query=query).geturl()


@functools.cache
def _unreachable_reason() -> str | None:
    """Asked once per test run, on a loop of its own."""
    async def probe() -> None:
        db = await asyncpg.connect(admin_dsn(), timeout=CONNECT_TIMEOUT_S)
        await db.close()

    try:
        asyncio.run(probe()) if not _loop_running() else _in_thread(probe)
    except Exception as error:  # noqa: BLE001 - any failure is the reason to report
        return (f"PostgreSQL not reachable at {admin_dsn()} ({type(error).__name__}: {error}); "
                f"start it (.ci/run does) or set {DSN_ENV}")
    return None


def require_postgres() -> None:
    reason = _unreachable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the PostgreSQL tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _in_thread(make_coro):
    """Runs a coroutine to its end on a loop in another thread: for sync
    helpers called from inside a test's running event loop."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((asyncio.run(make_coro()), None))
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller
            outcome.append((None, error))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    result, error = outcome[0]
    if error is not None:
        raise error
    return result


_PLACEHOLDER = re.compile(r"\?")


def _numbered(sql: str) -> str:
    """`?` placeholders (sqlite3's) as $1, $2... (PostgreSQL's)."""
    count = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(count)}", sql)


def postgres_rows(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows as plain tuples, through a connection of their own."""
    async def fetch() -> list[tuple]:
        db = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
        try:
            return [tuple(row) for row in await db.fetch(_numbered(sql), *params)]
        finally:
            await db.close()

    return _in_thread(fetch) if _loop_running() else asyncio.run(fetch())


class PostgresDatabases:
    """Empty schemas made for one test in the admin database, each a
    database of its own to paygrid; dropped after the test."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def create(self) -> str:
        """A DSN whose connections see only a new, empty schema."""
        name = f"paygrid_test_{uuid.uuid4().hex[:16]}"
        admin = await asyncpg.connect(admin_dsn(), timeout=CONNECT_TIMEOUT_S)
        try:
            await admin.execute(f'CREATE SCHEMA "{name}"')
        finally:
            await admin.close()
        self.names.append(name)
        return dsn_for(name)

    async def drop_all(self) -> None:
        if not self.names:
            return
        admin = await asyncpg.connect(admin_dsn(), timeout=CONNECT_TIMEOUT_S)
        try:
            for name in self.names:
                await admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await admin.close()
        self.names.clear()
