"""EventLog on PostgreSQL: reads by seq, which the sequencer gives only to
committed rows (postgres/event_sequencer.py says why not the id)."""

from __future__ import annotations

import asyncio

from paygrid_server.domain.model.event import Event
from paygrid_server.storage.event_signal import EventSignal
from paygrid_server.storage.event_rows import AGGREGATE_TYPES, event_from_row
from paygrid_server.storage.postgres.database import PostgresDatabase
from paygrid_server.storage.event_positions import PRUNED_SQL
from paygrid_server.storage.postgres.event_sequencer import HIGH_WATER_SQL, sequence_events
from paygrid_server.storage.postgres.payment_events import EVENTS_CHANNEL


class PostgresEventLog:
    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database
        self._signal = EventSignal()
        # Single flight: readers that arrive while a sequencer run is going
        # share the next one (a woken crowd of watchers costs two runs, not
        # one each). Tickets number the requests; `_covered` is the highest
        # ticket a finished run started after.
        self._sequencing = asyncio.Lock()
        self._tickets = 0
        self._covered = 0

    async def _sequence(self) -> None:
        """Returns once a sequencer run that started after this call
        began has finished: every event committed before the call has its seq."""
        self._tickets += 1
        ticket = self._tickets
        async with self._sequencing:
            if self._covered >= ticket:
                return
            covered = self._tickets  # all of these began before this run starts
            await sequence_events(self._database)
            self._covered = covered

    async def start_listening(self) -> None:
        """Wakes this replica's watchers on every replica's commits."""
        await self._database.listen(EVENTS_CHANNEL, self._signal.notify)

    async def last_seq(self) -> int:
        # Only given seqs count: a row still without one gets a larger one,
        # so the rows committed before this call get theirs first (LATEST
        # starts after them).
        await self._sequence()
        return await self._database.read("fetchval", HIGH_WATER_SQL)

    async def pruned_through(self) -> int:
        return await self._database.read("fetchval", PRUNED_SQL)

    def changes(self) -> int:
        return self._signal.count

    async def wait_for_change(self, seen: int, timeout_s: float) -> bool:
        return await self._signal.wait(seen, timeout_s)

    async def list_events(self, tenant_id: str, after_seq: int, type_prefix: str,
                          limit: int, subject: str = "") -> list[Event]:
        # Everything committed before this call gets its seq first.
        await self._sequence()
        where = "tenant_id = $1 AND seq > $2 AND starts_with(type, $3)"
        params: tuple = (tenant_id, after_seq, type_prefix, limit)
        if subject:
            # Every aggregate type named: the unique (tenant, type, id,
            # version) index then finds a subject's few events directly.
            where += f" AND aggregate_type IN {AGGREGATE_TYPES} AND aggregate_id = $5"
            params += (subject,)
        rows = await self._database.read(
            "fetch", f"SELECT * FROM events WHERE {where} ORDER BY seq LIMIT $4", *params)
        return [event_from_row(row) for row in rows]

    async def list_all_events(self, after_seq: int, limit: int) -> list[Event]:
        await self._sequence()
        rows = await self._database.read(
            "fetch", "SELECT * FROM events WHERE seq > $1 ORDER BY seq LIMIT $2", after_seq, limit)
        return [event_from_row(row) for row in rows]

    async def get_event(self, event_id: str) -> Event | None:
        # Sequenced first: an event is never answered without its cursor.
        await self._sequence()
        row = await self._database.read(
            "fetchrow", "SELECT * FROM events WHERE event_id = $1", event_id)
        return event_from_row(row) if row is not None else None
