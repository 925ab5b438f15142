"""Real-time payments before batch work, within this process.

Why: one event loop runs both. A batch streaming through keeps it busy
(a message's items validated and stored, groups marked, charged and
stored), and every step of a Pay then waits behind the batch steps queued
before it. Measured (docs/performance.md, session 19): Pays at 200/s during
a 300k-item batch took 45 ms at p50 in place of 4.5 ms alone. A checkout
waits for a Pay; a payroll file does not wait for any one of its groups.

So a batch step that starts new work (storing a message's items, starting a
group) first waits while any caller here waits for a payment or a refund
(both count as a payment here: money a caller waits to see move), and at most
`yield_ms`: the loop then has room for the payments' steps, and a batch
under constant payment traffic still moves. Steps already under way are
never held (a charged group's results are stored at once), and nothing
waits while it holds anything a payment needs. 0 turns it off.

Per process: it frees this process's loop for this process's payments
(replicas and workers each have their own loop).
"""

from __future__ import annotations

import asyncio

from paygrid_server.domain.model import clock, limits


class PaymentsFirst:
    def __init__(self, yield_ms: int) -> None:
        assert 0 <= yield_ms <= limits.BATCH_YIELD_TO_PAYMENTS_MAX_MS, yield_ms
        self._yield_s = yield_ms / 1_000
        self._payments = 0  # callers waiting for a payment now
        self._none = asyncio.Event()  # set while _payments is 0
        self._none.set()
        # For metrics (observability/payments_first_collector.py):
        self.batch_steps_yielded = 0
        self.batch_yielded_s = 0.0

    def payment_started(self) -> None:
        """A caller waits for a payment; payment_ended() must follow."""
        self._payments += 1
        self._none.clear()

    def payment_ended(self) -> None:
        assert self._payments > 0
        self._payments -= 1
        if not self._payments:
            self._none.set()

    async def batch_turn(self) -> None:
        """Returns once no caller waits for a payment here, or after
        yield_ms if they keep coming."""
        if not self._payments or not self._yield_s:
            return
        self.batch_steps_yielded += 1
        started_ms = clock.monotonic_ms()
        try:
            await asyncio.wait_for(self._none.wait(), self._yield_s)
        except TimeoutError:
            pass  # payments keep coming: the batch goes on anyway
        finally:
            self.batch_yielded_s += (clock.monotonic_ms() - started_ms) / 1_000
