"""Which replica relays events: the one holding a session advisory lock on
a connection of its own. The others wait in pg_advisory_lock (no polling:
PostgreSQL wakes the first waiter when the lock is freed), and when the
leader dies its connection closes with it, the lock is released and a
waiter takes over. A lock on a pooled connection would be lost (or kept by
the wrong work) whenever the pool hands the connection on."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from paygrid_server.storage.postgres.database import redacted_dsn

log = structlog.get_logger("paygrid.event_relay")

# The lock's key, per schema: advisory locks are per database, and two
# paygrids in two schemas of one database (tests do that) are two deployments.
RELAY_LOCK_KEY_SQL = "hashtextextended('paygrid relay leader ' || current_schema(), 0)"
# After a failed connect, before the next try.
RETRY_S = 1.0


class PostgresRelayLeadership:
    def __init__(self, dsn: str, connect_timeout_s: float) -> None:
        self._dsn = dsn
        self._connect_timeout_s = connect_timeout_s
        self._connection: asyncpg.Connection | None = None
        self.lost = asyncio.Event()

    async def acquire(self) -> None:
        await self.release()
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(
                    self._dsn, timeout=self._connect_timeout_s,
                    # Waiting for the lock is a statement that may last for days.
                    server_settings={"application_name": "paygrid-relay-leader",
                                     "statement_timeout": "0"})
                await connection.execute(f"SELECT pg_advisory_lock({RELAY_LOCK_KEY_SQL})")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    TimeoutError) as error:
                if connection is not None:
                    connection.terminate()
                log.warning("event_relay.leader_lock_failed",
                            database=redacted_dsn(self._dsn), error=f"{type(error).__name__}: {error}")
                await asyncio.sleep(RETRY_S)
                continue
            except BaseException:
                if connection is not None:
                    connection.terminate()  # a cancelled wait must not take the lock later
                raise
            self.lost = asyncio.Event()
            lost = self.lost
            connection.add_termination_listener(lambda _: lost.set())
            self._connection = connection
            return

    async def release(self) -> None:
        """Closing the session releases its lock."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()
