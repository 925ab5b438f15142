"""When a replica (or a worker sharing a SQLite file) may take up another's
unfinished payment or refund: once no call can still be driving it, which
is limits.HANDOFF_AFTER_MS after it was stored. Before that, work in flight
elsewhere looks exactly like abandoned work, so a process takes up its own
unfinished work at once and another's only after the hand-off. One rule for
both engines (postgres/payment_store.py, sqlite/payment_store.py)."""

from __future__ import annotations

from typing import Callable

from paygrid_server.domain.model import clock, limits


def handoff_cutoff_us() -> int:
    """Unfinished work stored before this time (µs) is no live call's."""
    return clock.now_us() - limits.HANDOFF_AFTER_MS * 1_000


class UnfinishedWork:
    """Ids of payments (or refunds) this process stored and has not
    finished, and which unfinished ones it may take up. `shared`: other
    processes may drive work in the same store (else everything unfinished
    is this process's); `take_all_first`: none lives at this one's start,
    so its first listing takes up everything unfinished."""

    def __init__(self, shared: bool, take_all_first: bool = False) -> None:
        self._shared = shared
        self._take_all_once = take_all_first  # the first listing only
        self._own: set[str] = set()

    def started(self, work_id: str) -> None:
        if self._shared:
            self._own.add(work_id)

    def finished(self, work_id: str) -> None:
        self._own.discard(work_id)

    def listing(self) -> Callable[[str, int], bool]:
        """For one listing of unfinished work: whether this process takes up
        the one with that id, stored at that time (µs)."""
        take_all, self._take_all_once = self._take_all_once or not self._shared, False
        cutoff_us = handoff_cutoff_us()

        def takes(work_id: str, stored_at_us: int) -> bool:
            if take_all:
                self.started(work_id)  # this process drives it from now on
                return True
            return work_id in self._own or stored_at_us < cutoff_us
        return takes

    def own_and_cutoff(self) -> tuple[list[str], int]:
        """What a listing takes, for a store that selects it in a query
        (shared work, never taken all at once): this process's own ids, and
        the time (µs) before which anyone's unfinished work is taken."""
        return list(self._own), handoff_cutoff_us()

    def may_be_running_elsewhere(self, work_id: str, stored_at_us: int) -> bool:
        """Whether another process may be driving this unfinished work now."""
        return (self._shared and work_id not in self._own
                and stored_at_us >= handoff_cutoff_us())
