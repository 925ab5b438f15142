"""The PostgreSQL database every store of a replica shares: one asyncpg pool,
migrated at open.

Durable before acknowledged, as with SQLite: every connection runs with
synchronous_commit = on, so a COMMIT returns only once it is flushed on the
server (and on synchronous standbys, where configured). Several replicas
share one database: what must hold across them is held by unique
constraints and by transactions (see postgres/payment_store.py), never by
anything in one process.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable
from urllib.parse import urlsplit

import asyncpg
import asyncpg.exceptions as pg

from paygrid_server.domain.ports.storage_errors import StorageFault, StorageUnavailable
from paygrid_server.storage.postgres.notify_listener import NotifyListener
from paygrid_server.storage.postgres.schema_migrations import migrate

# How long close() waits for connections in use before it drops them.
POOL_CLOSE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class PostgresLimits:
    # Connections one replica holds at most; replicas x this must stay under
    # the server's max_connections.
    pool_max_connections: int = 10
    # Any statement running longer is cancelled by the server (the call then
    # fails) instead of holding locks and a connection for ever.
    statement_timeout_ms: int = 30_000
    # Connecting (TCP, TLS, authentication) may take this long, at start-up
    # and whenever the pool opens a new connection.
    connect_timeout_ms: int = 5_000


class PostgresUnavailable(RuntimeError):
    pass


# Faults of the database, not of the statement: the caller gets UNAVAILABLE
# (retry later with the same key) instead of an unknown error.
_FAULTS: tuple[tuple[tuple[type[BaseException], ...], StorageFault], ...] = (
    ((pg.DiskFullError,), StorageFault.DISK_FULL),
    ((pg.ReadOnlySQLTransactionError,), StorageFault.READ_ONLY),
    ((pg.QueryCanceledError, pg.LockNotAvailableError, pg.DeadlockDetectedError,
      pg.SerializationError), StorageFault.BUSY),
    ((pg.PostgresConnectionError, pg.CannotConnectNowError, pg.TooManyConnectionsError,
      pg.AdminShutdownError, pg.CrashShutdownError, OSError, TimeoutError),
     StorageFault.UNREACHABLE),
)


def as_storage_error(error: BaseException) -> BaseException:
    for kinds, fault in _FAULTS:
        if isinstance(error, kinds):
            return StorageUnavailable(fault, f"{type(error).__name__}: {error}")
    return error


def redacted_dsn(dsn: str) -> str:
    """The DSN without its password, for logs and messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class PostgresDatabase:
    def __init__(self, pool: asyncpg.Pool, dsn: str = "",
                 limits: PostgresLimits = PostgresLimits()) -> None:
        self.pool = pool
        self._dsn = dsn
        self._limits = limits
        self._listener: NotifyListener | None = None

    @property
    def listener(self) -> NotifyListener | None:
        return self._listener

    async def listen(self, channel: str, wake: Callable[[], None]) -> None:
        """Calls wake() on every NOTIFY on `channel` (notify_listener.py:
        its own connection, reopened when lost, waking on loss too)."""
        self._listener = NotifyListener(self._connect_listener, channel, wake)
        await self._listener.open()

    async def _connect_listener(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(
                self._dsn, timeout=self._limits.connect_timeout_ms / 1_000)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
            raise PostgresUnavailable(
                f"cannot open PostgreSQL database {redacted_dsn(self._dsn)} to listen: "
                f"{type(error).__name__}: {error}") from error

    @classmethod
    async def open(cls, dsn: str, limits: PostgresLimits = PostgresLimits()) -> "PostgresDatabase":
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=limits.pool_max_connections,
                timeout=limits.connect_timeout_ms / 1_000,
                server_settings={
                    "synchronous_commit": "on",
                    "statement_timeout": str(limits.statement_timeout_ms),
                    "application_name": "paygrid",
                    # Short OLTP statements: planning with JIT costs more than it saves.
                    "jit": "off",
                })
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
            raise PostgresUnavailable(
                f"cannot open PostgreSQL database {redacted_dsn(dsn)}: "
                f"{type(error).__name__}: {error}") from error
        try:
            async with pool.acquire() as connection:
                await migrate(connection)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, dsn, limits)

    @asynccontextmanager
    async def transaction(self, isolation: str = "read_committed",
                          readonly: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection in a transaction, committed when the block
        ends. A database fault before the COMMIT is sent becomes
        StorageUnavailable: the transaction is rolled back whole, which is
        what StorageUnavailable promises. One during the COMMIT is left as
        it is: the server may have committed, and nobody can say."""
        committing = False
        try:
            async with self.pool.acquire() as db:
                transaction = db.transaction(isolation=isolation, readonly=readonly)
                await transaction.start()
                try:
                    yield db
                except BaseException:
                    if not db.is_closed():
                        await transaction.rollback()
                    raise
                committing = True
                await transaction.commit()
        except Exception as error:
            if committing:
                raise
            mapped = as_storage_error(error)
            if mapped is error:
                raise
            raise mapped from error

    async def read(self, method: str, sql: str, *params: Any) -> Any:
        """One read statement (`fetch`, `fetchrow` or `fetchval`): never
        ambiguous, so every database fault is StorageUnavailable."""
        try:
            return await getattr(self.pool, method)(sql, *params)
        except Exception as error:
            mapped = as_storage_error(error)
            if mapped is error:
                raise
            raise mapped from error

    async def write(self, method: str, sql: str, *params: Any) -> Any:
        """One write statement (`execute` or `fetchval`), in transaction()."""
        async with self.transaction() as db:
            return await getattr(db, method)(sql, *params)

    async def close(self) -> None:
        """Bounded: Pool.close waits for every connection to be released, and
        one held by work cut off at shutdown may never be."""
        if self._listener is not None:
            self._listener.close()
        try:
            await asyncio.wait_for(self.pool.close(), POOL_CLOSE_TIMEOUT_S)
        except TimeoutError:
            self.pool.terminate()
