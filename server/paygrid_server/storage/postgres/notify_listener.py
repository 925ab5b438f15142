"""LISTEN on a connection of its own (a pooled one would hold a slot
forever), reopened when lost: a database restart, a failover or an idle
timeout must not leave a replica's watchers waking only on their
keep-alive timeouts from then on.

Every loss and every reopening wakes the listeners: NOTIFYs sent while the
connection was down are gone, so the watchers read the log again (the log,
not the notification, is what they trust)."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import asyncpg
import structlog

log = structlog.get_logger("paygrid.postgres.listen")

REOPEN_FIRST_DELAY_S = 0.1
REOPEN_MAX_DELAY_S = 5.0


class NotifyListener:
    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]],
                 channel: str, wake: Callable[[], None]) -> None:
        self._connect = connect  # raises PostgresUnavailable (database.py's message)
        self._channel = channel
        self._wake = wake
        self._connection: asyncpg.Connection | None = None
        self._reopening: asyncio.Task | None = None
        self._closed = False

    @property
    def server_pid(self) -> int | None:
        """The backend listening now (None while reopening): tests end it."""
        connection = self._connection
        return None if connection is None or connection.is_closed() else connection.get_server_pid()

    async def open(self) -> None:
        connection = await self._connect()
        await connection.add_listener(self._channel, lambda *_: self._wake())
        connection.add_termination_listener(self._lost)
        self._connection = connection

    def _lost(self, *_: object) -> None:
        self._wake()
        if self._closed or (self._reopening is not None and not self._reopening.done()):
            return
        log.warning("postgres.listen_lost", channel=self._channel,
                    hint="reopening; watchers fall back on their keep-alive reads meanwhile")
        self._connection = None
        self._reopening = asyncio.get_running_loop().create_task(self._reopen())

    async def _reopen(self) -> None:
        delay_s = REOPEN_FIRST_DELAY_S
        while not self._closed:
            try:
                await self.open()
            except Exception as error:  # noqa: BLE001 - any failure: try again later
                log.warning("postgres.listen_reopen_failed", error=str(error), retry_s=delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, REOPEN_MAX_DELAY_S)
                continue
            log.info("postgres.listen_reopened", channel=self._channel)
            self._wake()  # what was notified while it was down
            return

    def close(self) -> None:
        self._closed = True
        if self._reopening is not None:
            self._reopening.cancel()
        if self._connection is not None:
            self._connection.terminate()  # a LISTEN connection holds no work
