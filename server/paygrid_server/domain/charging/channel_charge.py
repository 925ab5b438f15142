"""One charge on one channel: transient errors retried with the same key.

Shared by payment legs and batch items. Retrying is always safe because
every call carries the same idempotency key; what comes back is either the
channel's record or why none did, and whether any call may have reached the
channel (then the outcome is unknown until settled).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar, NamedTuple

from paygrid_server.domain.model import clock, limits
from paygrid_server.domain.charging.settlement import ChargeSettlement
from paygrid_server.domain.charging.circuit_breaker import CircuitBreaker
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import Failure, FailureReason
from paygrid_server.domain.ports.payment_channel import (
    ChannelRefused,
    ChannelTimeout,
    ChannelUnavailable,
    ChannelUnreachable,
    ChargeRecord,
    ChargeStatus,
    PaymentChannel,
)

TRANSIENT_RETRY_PAUSE_S = 0.01

T = TypeVar("T")


class ChargeOrder(NamedTuple):
    # A NamedTuple, not a frozen dataclass: as immutable and a third of the
    # cost to make (a batch makes one per item).
    key: str
    payer: str
    payee: str
    amount: Money
    reference: str


@dataclass(frozen=True, slots=True)
class NoOutcome:
    failure: Failure
    maybe_sent: bool  # a call may have reached the channel: settle before moving on


async def call_with_retries(
    channel_name: str, breaker: CircuitBreaker, call: Callable[[int], Awaitable[T]],
    timeout_ms: int, deadline_ms: float, what: str = "charge",
    on_try: Callable[[], Awaitable[None]] | None = None,
) -> T | NoOutcome:
    """`call(timeout_ms)` (one Charge, or one ChargeBatch) with transient
    errors retried: the same keys each time, a short pause between tries,
    the breaker told once per call. `on_try` runs before each call (for
    instance to count or record it)."""
    failure = Failure(FailureReason.CHANNEL_TIMEOUT, "deadline reached")
    maybe_sent = False
    for _ in range(limits.CHARGE_TRIES_PER_CHANNEL):
        remaining_ms = deadline_ms - clock.monotonic_ms()
        if remaining_ms < 1:
            break
        if on_try is not None:
            await on_try()
        try:
            result = await call(int(min(timeout_ms, remaining_ms)))
        except ChannelUnavailable as error:
            breaker.record_failure()
            maybe_sent = maybe_sent or not isinstance(error, ChannelUnreachable)
            failure = Failure(FailureReason.CHANNEL_UNAVAILABLE,
                              f"channel {channel_name!r} unavailable: {error}")
            await asyncio.sleep(TRANSIENT_RETRY_PAUSE_S)
            continue
        except ChannelTimeout:
            breaker.record_failure()
            return NoOutcome(Failure(FailureReason.CHANNEL_TIMEOUT,
                                     f"channel {channel_name!r} did not answer in time"), True)
        except ChannelRefused as error:
            breaker.record_success()  # it answered; the request was the problem
            return NoOutcome(Failure(FailureReason.CHANNEL_REJECTED,
                                     f"channel {channel_name!r} refused the {what}: {error}"),
                             True)
        breaker.record_success()
        return result
    return NoOutcome(failure, maybe_sent)


async def charge_with_retries(
    channel: PaymentChannel, breaker: CircuitBreaker, order: ChargeOrder, timeout_ms: int,
    deadline_ms: float, on_try: Callable[[], Awaitable[None]] | None = None,
) -> ChargeRecord | NoOutcome:
    return await call_with_retries(
        channel.name, breaker,
        lambda call_timeout_ms: channel.charge(order.key, order.payer, order.payee, order.amount,
                                               order.reference, call_timeout_ms),
        timeout_ms, deadline_ms, "charge", on_try)


# The channel decline code that gets a reason of its own: the one a payer
# can act on (top up, pay another way) and clients ask to tell apart.
INSUFFICIENT_FUNDS_CODE = "insufficient_funds"


def decline_reason(decline_code: str) -> FailureReason:
    """The reason for a decline with the channel's `decline_code`. Either
    reason is a decline (an outcome): checks of what failed look at the
    channel's ChargeStatus, never at this reason."""
    if decline_code == INSUFFICIENT_FUNDS_CODE:
        return FailureReason.INSUFFICIENT_FUNDS
    return FailureReason.DECLINED


def charge_failure(channel: str, record: ChargeRecord) -> Failure | None:
    """Why a channel's definitive record means no money moved; None if captured."""
    if record.status is ChargeStatus.CAPTURED:
        return None
    if record.status is ChargeStatus.DECLINED:
        return Failure(decline_reason(record.decline_code),
                       record.decline_message or "declined by the channel", record.decline_code)
    return Failure(FailureReason.CHANNEL_REJECTED, f"channel {channel!r} holds this charge as voided")


async def charge_and_settle(
    channel: PaymentChannel, breaker: CircuitBreaker, settlement: ChargeSettlement,
    order: ChargeOrder, timeout_ms: int, deadline_ms: float,
    on_try: Callable[[], Awaitable[None]] | None = None,
) -> ChargeRecord | Failure | NoOutcome:
    """The channel's record; or a Failure when nothing was charged there (never
    sent, or fenced), so another channel may be tried; or NoOutcome when the
    channel could not even be asked: the outcome stays unknown."""
    outcome = await charge_with_retries(channel, breaker, order, timeout_ms, deadline_ms, on_try)
    if isinstance(outcome, ChargeRecord):
        return outcome
    if not outcome.maybe_sent:
        return outcome.failure
    settled = await settlement.settle(channel.name, order.key)
    if settled is None:
        return outcome
    if settled.status is ChargeStatus.VOIDED:
        return outcome.failure
    return settled
