"""When a replica (or a worker sharing a SQLite file) may take up another's
unfinished payment or refund: once no call can still be driving it, which
is limits.HANDOFF_AFTER_MS after it was stored. Before that, work in flight
elsewhere looks exactly like abandoned work."""

from __future__ import annotations

from paygrid_server.domain.model import clock, limits


def handoff_cutoff_us() -> int:
    """Unfinished work stored before this time (µs) is no live call's."""
    return clock.now_us() - limits.HANDOFF_AFTER_MS * 1_000
