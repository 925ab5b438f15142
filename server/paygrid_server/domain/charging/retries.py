"""Retrying the calls that settle an outcome (status lookups, voids, refunds).

They carry idempotency keys, so repeating them is always safe; they have
their own budget because they may run after the caller's deadline.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

import structlog

from paygrid_server.domain.model import limits
from paygrid_server.domain.ports.payment_channel import ChannelCallError, ChannelRefused

T = TypeVar("T")

RETRY_PAUSE_S = 0.05

log = structlog.get_logger("paygrid.channels")


async def retry_settlement_call(call: Callable[[], Awaitable[T]], event: str,
                                **fields: object) -> T | None:
    """`call`'s result, or None when every try failed to get an answer.
    ChannelRefused is an answer and is raised: repeating it would not help."""
    for attempt in range(limits.SETTLEMENT_TRIES):
        if attempt:
            await asyncio.sleep(RETRY_PAUSE_S * attempt)
        try:
            return await call()
        except ChannelRefused:
            raise
        except ChannelCallError as error:
            log.warning(event, attempt=attempt + 1, error=str(error), **fields)
    return None
