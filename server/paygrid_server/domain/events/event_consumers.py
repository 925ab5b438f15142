"""AckEvents and DeleteEventConsumer: named consumers' saved positions,
per tenant. A position is cumulative (it never moves back) and bounds
retention: no event after the smallest saved cursor is deleted."""

from __future__ import annotations

import re

from paygrid_server.domain.model import clock, limits
from paygrid_server.domain.model.errors import NotFound, OutOfRange
from paygrid_server.domain.model.event import CURSOR_AHEAD, CURSOR_EXPIRED
from paygrid_server.domain.model.request_validation import Violations
from paygrid_server.domain.ports.event_consumers import AckOutcome, EventConsumerStore

_CONSUMER_NAME = re.compile(limits.EVENT_CONSUMER_PATTERN)


def check_consumer_name(v: Violations, path: str, name: str) -> None:
    if not _CONSUMER_NAME.fullmatch(name):
        v.add(path, f"must be 1-64 of a-z, 0-9, '.', '_' or '-', got {name!r}")


def cursor_expired(path: str, cursor: int, pruned_through: int) -> OutOfRange:
    return OutOfRange(
        path, CURSOR_EXPIRED,
        f"{path} {cursor} is expired: retention deleted the events through "
        f"{pruned_through}; start again from {pruned_through} (or EARLIEST)",
        pruned_through=str(pruned_through))


class EventConsumers:
    def __init__(self, store: EventConsumerStore) -> None:
        self._store = store

    async def ack(self, tenant_id: str, name: str, up_to_cursor: int) -> int:
        """The saved cursor after this ack."""
        v = Violations()
        check_consumer_name(v, "consumer", name)
        if up_to_cursor < 0:
            v.add("up_to_cursor", f"must be 0 or a cursor, got {up_to_cursor}")
        v.raise_if_any()
        result = await self._store.save_cursor(tenant_id, name, up_to_cursor, clock.now_us())
        if result.outcome is AckOutcome.AHEAD:
            raise OutOfRange(
                "up_to_cursor", CURSOR_AHEAD,
                f"up_to_cursor {up_to_cursor} is past the log's end ({result.limit}): "
                "ack only cursors ListEvents or WatchEvents gave", high_water_mark=str(result.limit))
        if result.outcome is AckOutcome.EXPIRED:
            raise cursor_expired("up_to_cursor", up_to_cursor, result.limit)
        return result.cursor

    async def delete(self, tenant_id: str, name: str) -> None:
        v = Violations()
        check_consumer_name(v, "consumer", name)
        v.raise_if_any()
        if not await self._store.delete_consumer(tenant_id, name):
            raise NotFound("event consumer", name)

    async def saved_cursor(self, tenant_id: str, name: str) -> int | None:
        return await self._store.saved_cursor(tenant_id, name)
