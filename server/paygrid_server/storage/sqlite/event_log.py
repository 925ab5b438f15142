"""EventLog on SQLite. seq is taken at INSERT inside a write transaction,
which holds the file's write lock (one writer at a time, across processes
too), so seq order is commit order: a reader that saw seq n can never see a
smaller one later.

Watchers are woken by this process's own commits (the stores signal), and,
with `--workers N`, by other workers' commits: while anyone waits (watchers
or the relay), `PRAGMA data_version` is read every EVENT_POLL_MS on a
connection of its own, on the event loop (it only compares the WAL index's
header: microseconds, no thread hop), and a change (a commit by any other
connection) wakes the waiters, who read the log. A poller that starts wakes
everyone once: a commit between a waiter's read and the poller's first look
is never missed."""

from __future__ import annotations

import asyncio
import sqlite3

import structlog

from paygrid_server.domain.model.event import Event
from paygrid_server.storage.event_signal import EventSignal
from paygrid_server.storage.event_rows import event_from_row
from paygrid_server.storage.event_rows import AGGREGATE_TYPES
from paygrid_server.storage.sqlite.database import SqliteDatabase
from paygrid_server.storage.event_positions import PRUNED_SQL
from paygrid_server.storage.sqlite.event_consumers import HIGH_WATER_SQL
from paygrid_server.storage.sqlite.file_sharing import LONE, FileSharing

log = structlog.get_logger("paygrid.events")

# How often another worker's commits are looked for while anyone waits: a
# watcher sees another worker's event within this (plus a read).
EVENT_POLL_MS = 5
# The poller stops this long after the last waiter left (a watcher between
# two waits keeps it running: a poller's start wakes every waiter).
POLL_IDLE_MS = 1_000


class SqliteEventLog:
    def __init__(self, database: SqliteDatabase, sharing: FileSharing = LONE) -> None:
        self._reader = database.reader
        # Notified by the stores after each commit of this process that wrote
        # events; other workers' commits by the poller below.
        self.signal = EventSignal()
        self._others_write = sharing.workers
        self._path = database.path
        self._probe: sqlite3.Connection | None = None  # opened by the first poller
        database.close_with(self._close_probe)
        self._waiting = 0
        self._poller: asyncio.Task | None = None

    async def list_events(self, tenant_id: str, after_seq: int, type_prefix: str,
                          limit: int, subject: str = "") -> list[Event]:
        # substr, not LIKE: SQLite's LIKE ignores case, a type prefix must not.
        where = "tenant_id = ? AND seq > ? AND substr(type, 1, ?) = ?"
        params: tuple = (tenant_id, after_seq, len(type_prefix), type_prefix)
        if subject:
            # Every aggregate type named: the unique (tenant, type, id,
            # version) index then finds a subject's few events directly.
            where += f" AND aggregate_type IN {AGGREGATE_TYPES} AND aggregate_id = ?"
            params += (subject,)
        rows = await self._reader.execute_fetchall(
            f"SELECT * FROM events WHERE {where} ORDER BY seq LIMIT ?", params + (limit,))
        return [event_from_row(row) for row in rows]

    async def pruned_through(self) -> int:
        rows = await self._reader.execute_fetchall(PRUNED_SQL)
        return rows[0][0]

    async def list_all_events(self, after_seq: int, limit: int) -> list[Event]:
        rows = await self._reader.execute_fetchall(
            "SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))
        return [event_from_row(row) for row in rows]

    async def get_event(self, event_id: str) -> Event | None:
        rows = await self._reader.execute_fetchall(
            "SELECT * FROM events WHERE event_id = ?", (event_id,))
        return event_from_row(rows[0]) if rows else None

    async def last_seq(self) -> int:
        rows = await self._reader.execute_fetchall(HIGH_WATER_SQL)
        return rows[0][0]

    def changes(self) -> int:
        return self.signal.count

    async def wait_for_change(self, seen: int, timeout_s: float) -> bool:
        if not self._others_write:
            return await self.signal.wait(seen, timeout_s)
        self._waiting += 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_other_workers())
        try:
            return await self.signal.wait(seen, timeout_s)
        finally:
            self._waiting -= 1

    async def _poll_other_workers(self) -> None:
        idle_since = None
        loop = asyncio.get_running_loop()
        try:
            if self._probe is None:
                self._probe = sqlite3.connect(self._path, isolation_level=None,
                                              check_same_thread=False)
            version = self._data_version()
            self.signal.notify()  # see the module's docstring
            while True:
                await asyncio.sleep(EVENT_POLL_MS / 1_000)
                if not self._waiting:  # nobody to wake: no read (the file may be closing)
                    idle_since = loop.time() if idle_since is None else idle_since
                    if loop.time() - idle_since >= POLL_IDLE_MS / 1_000:
                        return
                    continue
                idle_since = None
                now = self._data_version()
                if now != version:
                    version = now
                    self.signal.notify()
        except Exception:  # noqa: BLE001 - the next wait starts a new poller
            log.warning("events.poll_failed", exc_info=True)
            self.signal.notify()  # waiters read the log again themselves

    def _close_probe(self) -> None:
        if self._poller is not None:
            self._poller.cancel()  # it may sleep still; it reads nothing more
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    def _data_version(self) -> int:
        assert self._probe is not None
        return self._probe.execute("PRAGMA data_version").fetchone()[0]
