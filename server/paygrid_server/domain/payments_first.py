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

Across workers (`serve --workers N`, given `siblings`): a step also waits
while the other workers' callers wait for payments, since the workers share
the machine's cores and, on SQLite, take turns writing one file: another
worker's batch holds this one's payments up as its own batch would. Their
payments' ends are not seen here, so while only they run a step looks
again every SIBLINGS_LOOK_AGAIN_MS. Replicas on other machines are not
counted: they share neither.
"""

from __future__ import annotations

import asyncio

from paygrid_server.domain.model import clock, limits
from paygrid_server.domain.ports.sibling_payments import SiblingPayments

# While only other workers' payments run: a Pay there takes a few ms, so a
# step goes on about 1 ms after the last ends, at a loop wake-up a ms.
SIBLINGS_LOOK_AGAIN_MS = 1


class PaymentsFirst:
    def __init__(self, yield_ms: int, siblings: SiblingPayments | None = None) -> None:
        assert 0 <= yield_ms <= limits.BATCH_YIELD_TO_PAYMENTS_MAX_MS, yield_ms
        self._yield_ms = yield_ms
        self._siblings = siblings
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
        if self._siblings is not None:
            self._siblings.publish(self._payments)

    def payment_ended(self) -> None:
        assert self._payments > 0
        self._payments -= 1
        if not self._payments:
            self._none.set()
        if self._siblings is not None:
            self._siblings.publish(self._payments)

    async def batch_turn(self) -> None:
        """Returns once no caller waits for a payment here or in a sibling,
        or after yield_ms if they keep coming."""
        if not self._yield_ms or not (self._payments or self._siblings_running()):
            return
        self.batch_steps_yielded += 1
        started_ms = clock.monotonic_ms()
        try:
            await self._until_no_payments(started_ms + self._yield_ms)
        finally:
            self.batch_yielded_s += (clock.monotonic_ms() - started_ms) / 1_000

    async def _until_no_payments(self, until_ms: float) -> None:
        while (left_ms := until_ms - clock.monotonic_ms()) > 0:
            if self._payments:
                try:
                    await asyncio.wait_for(self._none.wait(), left_ms / 1_000)
                except TimeoutError:
                    return  # payments keep coming: the batch goes on anyway
            elif self._siblings_running():
                await asyncio.sleep(min(SIBLINGS_LOOK_AGAIN_MS, left_ms) / 1_000)
            else:
                return

    def _siblings_running(self) -> int:
        return self._siblings.running() if self._siblings is not None else 0
