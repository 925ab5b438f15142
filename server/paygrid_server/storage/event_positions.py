"""The rules both engines apply inside their transactions, on numbers they
read there: a consumer's ack, and which events one pruning chunk deletes."""

from __future__ import annotations

from typing import Iterable

from paygrid_server.domain.ports.event_consumers import AckOutcome, AckResult

# Retention's mark (one row, both engines): every seq at or below it may be gone.
PRUNED_SQL = "SELECT pruned_through_seq FROM event_retention"


def ack_result(saved: int | None, up_to: int, high_water: int, pruned_through: int) -> AckResult:
    """What an ack of `up_to` does to a consumer whose saved cursor is
    `saved` (None: new). Cumulative: a lower ack keeps the higher cursor."""
    if up_to > high_water:
        return AckResult(AckOutcome.AHEAD, saved or 0, high_water)
    cursor = max(saved if saved is not None else 0, up_to)
    if 0 < cursor < pruned_through:
        return AckResult(AckOutcome.EXPIRED, cursor, pruned_through)
    return AckResult(AckOutcome.SAVED, cursor)


def last_prunable_seq(oldest: Iterable[tuple[int, int]], older_than_us: int,
                      consumer_floor: int | None) -> int | None:
    """Of the oldest events (seq, occurred_at_us) in seq order, the last seq
    of the run that may go: occurred before older_than_us and not after the
    smallest consumer cursor. Stops at the first that may not, so what is
    deleted is always everything up to a seq (the pruned_through mark)."""
    last = None
    for seq, occurred_at_us in oldest:
        if occurred_at_us >= older_than_us or (
                consumer_floor is not None and seq > consumer_floor):
            break
        last = seq
    return last
