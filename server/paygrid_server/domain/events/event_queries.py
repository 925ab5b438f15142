"""ListEvents and GetEvent: the caller's tenant's events, validated requests."""

from __future__ import annotations

from typing import AsyncIterator

from paygrid_server.domain.model import limits
from paygrid_server.domain.model.errors import NotFound
from paygrid_server.domain.model.event import Event, EventPage, WatchFrame
from paygrid_server.domain.model.request_validation import Violations, check_text
from paygrid_server.domain.ports.event_log import EventLog


class EventQueries:
    def __init__(self, log: EventLog) -> None:
        self._log = log

    async def list(self, tenant_id: str, after_cursor: int, page_size: int,
                   type_prefix: str) -> EventPage:
        v = Violations()
        _check_position(v, after_cursor, type_prefix)
        if not 0 <= page_size <= limits.EVENTS_PAGE_SIZE_MAX:
            v.add("page_size", f"must be 0 (default {limits.EVENTS_PAGE_SIZE_DEFAULT}) to "
                  f"{limits.EVENTS_PAGE_SIZE_MAX}, got {page_size}")
        v.raise_if_any()
        events = await self._log.list_events(
            tenant_id, after_cursor, type_prefix, page_size or limits.EVENTS_PAGE_SIZE_DEFAULT)
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
              keepalive_s: float = limits.WATCH_KEEPALIVE_S) -> AsyncIterator[WatchFrame]:
        """Validates now (a bad request fails the call before any frame),
        then replays and follows."""
        v = Violations()
        _check_position(v, after_cursor, type_prefix)
        v.raise_if_any()
        return self._follow(tenant_id, after_cursor, type_prefix, keepalive_s)

    async def _follow(self, tenant_id: str, cursor: int, type_prefix: str,
                      keepalive_s: float) -> AsyncIterator[WatchFrame]:
        while True:
            # Taken before the read: a commit after it wakes the wait below
            # even when it lands between the read and the wait.
            seen = self._log.changes()
            events = await self._log.list_events(tenant_id, cursor, type_prefix,
                                                 limits.WATCH_READ_BATCH)
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
            events = await self._log.list_events(tenant_id, cursor, type_prefix,
                                                 limits.WATCH_READ_BATCH)
            for event in events:
                cursor = event.seq
                yield WatchFrame(cursor, event)
            if not events:
                cursor = max(cursor, high)
                yield WatchFrame(cursor, None)


def _check_position(v: Violations, after_cursor: int, type_prefix: str) -> None:
    if after_cursor < 0:
        v.add("after_cursor", f"must be 0 (the beginning) or a cursor, got {after_cursor}")
    check_text(v, "type_prefix", type_prefix, limits.EVENT_TYPE_PREFIX_MAX_CHARS,
               required=False)
