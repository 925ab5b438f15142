"""What the domain needs to keep named consumers' positions (AckEvents) and
to prune the log (retention). Both live next to the events: the checks
against the log's ends must be in the transaction that saves or deletes."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class AckOutcome(enum.Enum):
    SAVED = "SAVED"  # cursor is the saved position (the new one, or a higher one kept)
    AHEAD = "AHEAD"  # past the log's end; `limit` is its high-water mark; nothing saved
    EXPIRED = "EXPIRED"  # below what retention kept; `limit` is pruned_through; nothing saved


@dataclass(frozen=True, slots=True)
class AckResult:
    outcome: AckOutcome
    cursor: int  # SAVED: the saved cursor
    limit: int = 0  # AHEAD, EXPIRED: the end the cursor is past


class EventConsumerStore(Protocol):
    async def save_cursor(self, tenant_id: str, name: str, up_to: int,
                          now_us: int) -> AckResult:
        """Saves max(saved, up_to), all in one transaction with the checks:
        up_to above the log's high-water mark is AHEAD; a result at
        0 < cursor < pruned_through is EXPIRED (0 is the beginning)."""
        ...

    async def saved_cursor(self, tenant_id: str, name: str) -> int | None:
        """None: no such consumer."""
        ...

    async def delete_consumer(self, tenant_id: str, name: str) -> bool:
        """False: there was none."""
        ...


class EventPruner(Protocol):
    async def prune_chunk(self, older_than_us: int, max_rows: int) -> int | None:
        """Deletes, in one transaction, up to max_rows of the oldest events
        (lowest seq) that occurred before older_than_us, stopping at the
        first younger one and at the smallest consumer cursor (no event
        after it goes), and moves pruned_through to the last seq deleted.
        Returns how many were deleted; None when another replica is pruning."""
        ...
