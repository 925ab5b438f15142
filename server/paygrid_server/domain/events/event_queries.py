"""ListEvents, GetEvent and WatchEvents: the caller's tenant's events,
validated requests, positions checked against what retention kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator

from paygrid_server.domain.events.event_consumers import (
    EventConsumers,
    check_consumer_name,
    cursor_expired,
)
from paygrid_server.domain.model import limits
from paygrid_server.domain.model.errors import NotFound
from paygrid_server.domain.model.event import Event, EventPage, StartPosition, WatchFrame
from paygrid_server.domain.model.request_validation import Violations, check_text
from paygrid_server.domain.ports.event_log import EventLog


@dataclass(frozen=True, slots=True)
class EventFilter:
    type_prefix: str = ""
    subject: str = ""  # an aggregate_id, exact; empty: any


@dataclass(frozen=True, slots=True)
class WatchStart:
    """Where a watch starts: after_cursor, a StartPosition, or a consumer's
    saved cursor (then `position` is where an unknown consumer starts)."""
    after_cursor: int = 0
    # str: a value the server does not know.
    position: StartPosition | str = StartPosition.AFTER_CURSOR
    consumer: str = ""


class EventQueries:
    def __init__(self, log: EventLog, consumers: EventConsumers | None = None) -> None:
        self._log = log
        self._consumers = consumers

    async def list(self, tenant_id: str, after_cursor: int, page_size: int,
                   type_prefix: str, subject: str = "") -> EventPage:
        v = Violations()
        _check_cursor(v, after_cursor)
        _check_filter(v, EventFilter(type_prefix, subject))
        if not 0 <= page_size <= limits.EVENTS_PAGE_SIZE_MAX:
            v.add("page_size", f"must be 0 (default {limits.EVENTS_PAGE_SIZE_DEFAULT}) to "
                  f"{limits.EVENTS_PAGE_SIZE_MAX}, got {page_size}")
        v.raise_if_any()
        events = await self._read(tenant_id, after_cursor, EventFilter(type_prefix, subject),
                                  page_size or limits.EVENTS_PAGE_SIZE_DEFAULT, "after_cursor")
        # An empty page keeps the cursor: nothing after it is committed yet.
        return EventPage(events, events[-1].seq if events else after_cursor)

    async def get(self, tenant_id: str, event_id: str) -> Event:
        v = Violations()
        check_text(v, "event_id", event_id, limits.EVENT_ID_MAX_CHARS, required=True)
        v.raise_if_any()
        event = await self._log.get_event(event_id)
        # Another tenant's event is answered as one that does not exist.
        if event is None or event.tenant_id != tenant_id:
            raise NotFound("event", event_id)
        return event

    def watch(self, tenant_id: str, after_cursor: int, type_prefix: str,
              keepalive_s: float = limits.WATCH_KEEPALIVE_S, *,
              subject: str = "", start: WatchStart | None = None) -> AsyncIterator[WatchFrame]:
        """Validates now (a bad request fails the call before any frame),
        then replays and follows. A position that needs the database (a
        consumer's, LATEST, an expired cursor) fails at the first frame,
        still before any is sent."""
        start = start or WatchStart(after_cursor)
        where = EventFilter(type_prefix, subject)
        v = Violations()
        _check_cursor(v, start.after_cursor)
        _check_filter(v, where)
        if not isinstance(start.position, StartPosition):
            v.add("start", f"unknown start position {start.position}")
        if start.consumer:
            check_consumer_name(v, "consumer", start.consumer)
        if start.after_cursor and (start.consumer or start.position
                                   is not StartPosition.AFTER_CURSOR):
            v.add("after_cursor", "must be 0 when start or consumer is given")
        v.raise_if_any()
        return self._follow(tenant_id, start, where, keepalive_s)

    async def _start_cursor(self, tenant_id: str, start: WatchStart) -> tuple[int, str]:
        """(the cursor to start after, the field that named it)."""
        if start.consumer:
            assert self._consumers is not None, "consumers are wired in app.py"
            saved = await self._consumers.saved_cursor(tenant_id, start.consumer)
            if saved is not None:
                return saved, "consumer"
            # Unknown (never acked, or deleted): where `start` says.
        if start.position is StartPosition.LATEST:
            return await self._log.last_seq(), "start"
        return start.after_cursor, "after_cursor"  # 0 for EARLIEST

    async def _read(self, tenant_id: str, cursor: int, where: EventFilter, limit: int,
                    field: str) -> list[Event]:
        events = await self._log.list_events(tenant_id, cursor, where.type_prefix, limit,
                                             where.subject)
        # After the read: the mark only grows, and moves with the deletes,
        # so a cursor at or above it now lost nothing in the read above.
        # 0 is the beginning: whatever retention kept.
        if cursor > 0:
            pruned = await self._log.pruned_through()
            if cursor < pruned:
                raise cursor_expired(field, cursor, pruned)
        return events

    async def _follow(self, tenant_id: str, start: WatchStart, where: EventFilter,
                      keepalive_s: float) -> AsyncIterator[WatchFrame]:
        cursor, field = await self._start_cursor(tenant_id, start)
        if field == "start":
            # LATEST: the position first, so the caller holds a cursor (to
            # resume or ack from) and knows from when it is following.
            yield WatchFrame(cursor, None)
        while True:
            # Taken before the read: a commit after it wakes the wait below
            # even when it lands between the read and the wait.
            seen = self._log.changes()
            events = await self._read(tenant_id, cursor, where, limits.WATCH_READ_BATCH, field)
            for event in events:
                cursor = event.seq
                yield WatchFrame(cursor, event)
            if len(events) == limits.WATCH_READ_BATCH:
                continue  # more are waiting: read on before sleeping
            if await self._log.wait_for_change(seen, keepalive_s):
                continue
            # Quiet: a keep-alive frame, its cursor moved past what this
            # watch does not see (other tenants, other types), so a consumer
            # resuming from it does not scan them again. The high-water mark
            # is taken before the read that proves nothing of ours is below it.
            high = await self._log.last_seq()
            events = await self._read(tenant_id, cursor, where, limits.WATCH_READ_BATCH, field)
            for event in events:
                cursor = event.seq
                yield WatchFrame(cursor, event)
            if not events:
                cursor = max(cursor, high)
                yield WatchFrame(cursor, None)


def _check_cursor(v: Violations, after_cursor: int) -> None:
    if after_cursor < 0:
        v.add("after_cursor", f"must be 0 (the beginning) or a cursor, got {after_cursor}")


def _check_filter(v: Violations, where: EventFilter) -> None:
    check_text(v, "type_prefix", where.type_prefix, limits.EVENT_TYPE_PREFIX_MAX_CHARS,
               required=False)
    check_text(v, "subject", where.subject, limits.EVENT_SUBJECT_MAX_CHARS, required=False)
