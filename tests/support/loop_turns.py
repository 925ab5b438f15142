"""Turning the event loop by hand: a test makes a moment happen by counting
the loop's turns, never by waiting for time to pass."""

from __future__ import annotations

import asyncio


async def turns(n: int = 5) -> None:
    """Lets the loop run `n` turns (each asyncio.sleep(0) is one)."""
    for _ in range(n):
        await asyncio.sleep(0)
