"""Charges one leg: retries on the same channel, fails over to the next.

Retrying a channel is always safe because every call carries the leg's
idempotency key. Moving to another channel is safe only once the first one
has been settled (charged, declined, or fenced), so an unanswered call is
settled before failover; if even that gets no answer the leg is UNKNOWN and
stays on that channel until the resolver learns the outcome.
"""

from __future__ import annotations

from paygrid_server.domain.model import clock
from paygrid_server.domain.charging.channel_charge import (
    ChargeOrder,
    NoOutcome,
    charge_and_settle,
    charge_failure,
)
from paygrid_server.domain.charging.charge_path import ChargePath
from paygrid_server.domain.model.payment import (
    ChargeAttempt,
    Failure,
    FailureReason,
    Leg,
    LegStatus,
    Payment,
)
from paygrid_server.domain.charging.routing import ChannelRoute
from paygrid_server.domain.ports.payment_channel import ChargeRecord
from paygrid_server.domain.ports.payment_store import PaymentStore


def apply_charge_record(leg: Leg, channel: str, record: ChargeRecord) -> None:
    """Sets a leg from a channel's definitive record of its charge."""
    leg.channel = channel
    leg.channel_reference = record.charge_id
    leg.failure = charge_failure(channel, record)
    leg.status = LegStatus.FAILED if leg.failure else LegStatus.SUCCEEDED


class LegDispatcher:
    def __init__(self, path: ChargePath, store: PaymentStore) -> None:
        self._router = path.router
        self._channels = path.channels
        self._store = store
        self._settlement = path.settlement

    async def dispatch(self, payment: Payment, leg: Leg, deadline_ms: float) -> None:
        """Drives `leg` to SUCCEEDED, FAILED or (rarely) UNKNOWN."""
        started_ms = clock.monotonic_ms()
        last_failure: Failure | None = None
        for route in self._router.candidates(leg.request):
            breaker = self._router.breaker(route.name)
            if not breaker.allow():
                last_failure = Failure(FailureReason.CIRCUIT_OPEN,
                                       f"channel {route.name!r} is failing; its circuit is open")
                continue
            leg.channel = route.name
            outcome = await self._charge_on(route, payment, leg, deadline_ms)
            if isinstance(outcome, ChargeRecord):
                apply_charge_record(leg, route.name, outcome)
                break
            if isinstance(outcome, NoOutcome):
                leg.status = LegStatus.UNKNOWN
                leg.failure = Failure(FailureReason.OUTCOME_UNKNOWN,
                                      f"{outcome.failure.message}; channel {route.name!r} has "
                                      "not confirmed whether it charged; paygrid keeps asking")
                break
            last_failure = outcome  # nothing charged here (never sent, or fenced): next channel
        else:
            leg.status = LegStatus.FAILED
            leg.failure = last_failure or Failure(FailureReason.NO_ELIGIBLE_CHANNEL,
                                                  "no channel accepts this leg")
        # Logged with its payment (completion.py), not on a line of its own.
        leg.latency_us = int((clock.monotonic_ms() - started_ms) * 1_000)

    async def _charge_on(self, route: ChannelRoute, payment: Payment, leg: Leg,
                         deadline_ms: float) -> ChargeRecord | Failure | NoOutcome:
        # The first channel's attempt was stored with the payment.
        recorded = route.name == leg.first_channel and leg.attempts == 0

        async def count_try() -> None:
            nonlocal recorded
            if not recorded:
                # Recorded before the first call: after a crash, recovery must
                # know every channel that may hold a charge for this leg.
                await self._store.record_attempt(ChargeAttempt(
                    payment.payment_id, leg.index, leg.attempts + 1, route.name, clock.now_us()))
                recorded = True
            leg.attempts += 1

        order = ChargeOrder(payment.channel_key(leg.index), payment.payer, leg.request.payee,
                            leg.request.amount, leg.request.reference)
        return await charge_and_settle(self._channels[route.name],
                                       self._router.breaker(route.name), self._settlement,
                                       order, route.timeout_ms, deadline_ms, count_try)
