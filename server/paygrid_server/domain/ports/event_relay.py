"""What the event relay needs besides the event log: where it keeps its
position, who may relay (one replica at a time), and the broker it
publishes to. storage/ implements the first two, brokers/ the third."""

from __future__ import annotations

import asyncio
from typing import Protocol

from paygrid_server.domain.model.event import Event


class RelayPosition(Protocol):
    """The relay's cursor: every event with seq <= it was confirmed by the
    broker. Kept in event_consumers (tenant '', name 'relay:rabbitmq'), so
    retention keeps what the relay has not published yet."""

    async def load(self) -> int:
        """The saved cursor; 0 (everything is still to publish) when none is saved."""
        ...

    async def save(self, cursor: int) -> None:
        """Durable on return. Never moves the cursor back: a replica that
        lost the lead late cannot undo its successor's progress."""
        ...


class RelayLeadership(Protocol):
    """One relay among the replicas that share a database."""

    async def acquire(self) -> None:
        """Returns once this replica leads (waits, without polling, while
        another does)."""
        ...

    @property
    def lost(self) -> asyncio.Event:
        """Set when the lead is lost (the database connection holding it
        broke): the relay stops publishing and acquires again."""
        ...

    async def release(self) -> None: ...


class BrokerUnavailable(Exception):
    """The broker cannot be reached or refused us (connection, credentials,
    vhost, exchange): the relay retries with backoff."""


class PublishFailed(Exception):
    """The broker did not confirm one event: nacked, returned as
    unroutable, or the connection dropped before its confirm. The relay
    republishes from its saved cursor."""


class EventPublisher(Protocol):
    async def connect(self) -> None:
        """Opens the connection and declares the exchange; BrokerUnavailable
        when it cannot."""
        ...

    async def publish(self, event: Event) -> None:
        """Returns once the broker confirmed `event` (persisted and routed
        to at least one queue); PublishFailed otherwise. Calls made one
        after another reach the broker in that order, confirms may not."""
        ...

    async def close(self) -> None: ...
