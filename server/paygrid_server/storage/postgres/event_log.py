"""EventLog on PostgreSQL: reads by seq, which the sequencer gives only to
committed rows (postgres/event_sequencer.py says why not the id)."""

from __future__ import annotations

from paygrid_server.domain.model.event import Event
from paygrid_server.storage.event_signal import EventSignal
from paygrid_server.storage.event_rows import event_from_row
from paygrid_server.storage.postgres.database import PostgresDatabase
from paygrid_server.storage.postgres.event_sequencer import sequence_events
from paygrid_server.storage.postgres.payment_events import EVENTS_CHANNEL


class PostgresEventLog:
    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database
        self._signal = EventSignal()

    async def start_listening(self) -> None:
        """Wakes this replica's watchers on every replica's commits."""
        await self._database.listen(EVENTS_CHANNEL, self._signal.notify)

    def changes(self) -> int:
        return self._signal.count

    async def wait_for_change(self, seen: int, timeout_s: float) -> bool:
        return await self._signal.wait(seen, timeout_s)

    async def list_events(self, tenant_id: str, after_seq: int, type_prefix: str,
                          limit: int) -> list[Event]:
        # Everything committed before this call gets its seq first.
        await sequence_events(self._database)
        rows = await self._database.read(
            "fetch", "SELECT * FROM events WHERE tenant_id = $1 AND seq > $2 "
            "AND starts_with(type, $3) ORDER BY seq LIMIT $4",
            tenant_id, after_seq, type_prefix, limit)
        return [event_from_row(row) for row in rows]

    async def get_event(self, event_id: str) -> Event | None:
        # Sequenced first: an event is never answered without its cursor.
        await sequence_events(self._database)
        row = await self._database.read(
            "fetchrow", "SELECT * FROM events WHERE event_id = $1", event_id)
        return event_from_row(row) if row is not None else None
