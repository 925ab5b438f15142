"""One charge on one channel, and the retried calls that settle outcomes:
which errors are retried (with the same key), what the breaker is told,
and whether a failed try may have reached the channel. The channel is a
scripted stand-in for the port, so each error arrives exactly when the test
says; the wiring to real channels is tested in test_pay.py."""

from __future__ import annotations

import types

import pytest

from paygrid_server.domain.charging import channel_charge
from paygrid_server.domain.charging import retries as channel_retries
from paygrid_server.domain.model import clock, limits
from paygrid_server.domain.charging.channel_charge import (
    ChargeOrder,
    NoOutcome,
    call_with_retries,
    charge_and_settle,
    charge_failure,
    charge_with_retries,
    decline_reason,
)
from paygrid_server.domain.charging.retries import retry_settlement_call
from paygrid_server.domain.charging.circuit_breaker import CircuitBreaker
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.model.payment import Failure, FailureReason
from paygrid_server.domain.ports.payment_channel import (
    ChannelCallError,
    ChannelRefused,
    ChannelTimeout,
    ChannelUnavailable,
    ChannelUnreachable,
    ChargeRecord,
    ChargeStatus,
)

NOW_MS = 1_000_000.0
CAPTURED = ChargeRecord("k", "ch_1", ChargeStatus.CAPTURED)


@pytest.fixture(autouse=True)
def fixed_time(monkeypatch) -> list[float]:
    """A clock that stands still, and pauses that are noted, not slept."""
    pauses: list[float] = []

    async def note_pause(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(clock, "monotonic_ms", lambda: NOW_MS)
    fake_asyncio = types.SimpleNamespace(sleep=note_pause)
    monkeypatch.setattr(channel_charge, "asyncio", fake_asyncio)
    monkeypatch.setattr(channel_retries, "asyncio", fake_asyncio)
    return pauses


class Script:
    """Answers call after call from a list: an exception is raised, anything
    else returned. Notes each call's timeout."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.timeouts: list[int] = []

    async def __call__(self, timeout_ms: int = 0):
        self.timeouts.append(timeout_ms)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def failing_breaker(failures: int = 0) -> CircuitBreaker:
    breaker = CircuitBreaker(failure_threshold=100)
    for _ in range(failures):
        breaker.record_failure()
    return breaker


async def call(script: Script, breaker: CircuitBreaker | None = None, timeout_ms: int = 500,
               deadline_ms: float = NOW_MS + 10_000, **kwargs):
    return await call_with_retries("card", breaker or failing_breaker(), script, timeout_ms,
                                   deadline_ms, **kwargs)


async def test_an_answer_is_returned_and_resets_the_breakers_count() -> None:
    breaker = failing_breaker(3)
    tries: list[int] = []

    async def on_try() -> None:
        tries.append(1)

    script = Script(CAPTURED)
    assert await call(script, breaker, on_try=on_try) is CAPTURED
    assert breaker.consecutive_failures == 0
    assert script.timeouts == [500] and tries == [1]


async def test_a_call_gets_the_smaller_of_its_timeout_and_the_budget_left() -> None:
    script = Script(CAPTURED)
    await call(script, timeout_ms=500, deadline_ms=NOW_MS + 120.7)
    assert script.timeouts == [120]
    exactly_one = Script(CAPTURED)
    assert await call(exactly_one, deadline_ms=NOW_MS + 1) is CAPTURED  # 1 ms left: tried
    assert exactly_one.timeouts == [1]


@pytest.mark.parametrize("left_ms", [0.9, 0, -5])
async def test_no_call_goes_out_with_under_a_millisecond_left(left_ms) -> None:
    script = Script()
    outcome = await call(script, deadline_ms=NOW_MS + left_ms)
    assert outcome == NoOutcome(Failure(FailureReason.CHANNEL_TIMEOUT, "deadline reached"), False)
    assert script.timeouts == []


async def test_unavailable_is_retried_once_with_a_pause_and_counted(fixed_time) -> None:
    breaker = failing_breaker()
    script = Script(ChannelUnavailable("down"), CAPTURED)
    assert await call(script, breaker) is CAPTURED
    assert len(script.timeouts) == 2 and fixed_time == [channel_charge.TRANSIENT_RETRY_PAUSE_S]
    assert breaker.consecutive_failures == 0  # the success came last

    breaker = failing_breaker()
    script = Script(*[ChannelUnavailable("down")] * limits.CHARGE_TRIES_PER_CHANNEL)
    outcome = await call(script, breaker)
    assert outcome == NoOutcome(Failure(FailureReason.CHANNEL_UNAVAILABLE,
                                        "channel 'card' unavailable: down"), True)
    assert len(script.timeouts) == limits.CHARGE_TRIES_PER_CHANNEL == 2
    assert breaker.consecutive_failures == 2


@pytest.mark.parametrize("errors, maybe_sent", [
    ((ChannelUnreachable("no route"), ChannelUnreachable("no route")), False),
    ((ChannelUnreachable("no route"), ChannelUnavailable("dropped")), True),
    ((ChannelUnavailable("dropped"), ChannelUnreachable("no route")), True),
])
async def test_only_a_call_never_sent_is_known_not_to_have_charged(errors, maybe_sent) -> None:
    outcome = await call(Script(*errors))
    assert isinstance(outcome, NoOutcome) and outcome.maybe_sent is maybe_sent
    assert outcome.failure.reason is FailureReason.CHANNEL_UNAVAILABLE


async def test_a_timeout_is_not_retried_and_may_have_charged() -> None:
    breaker = failing_breaker()
    script = Script(ChannelTimeout("slow"), CAPTURED)
    outcome = await call(script, breaker)
    assert outcome == NoOutcome(Failure(FailureReason.CHANNEL_TIMEOUT,
                                        "channel 'card' did not answer in time"), True)
    assert len(script.timeouts) == 1 and breaker.consecutive_failures == 1


async def test_a_refusal_is_an_answer_not_a_failure_of_the_channel() -> None:
    breaker = failing_breaker(2)
    outcome = await call(Script(ChannelRefused("bad key")), breaker, what="batch charge")
    assert outcome == NoOutcome(Failure(FailureReason.CHANNEL_REJECTED,
                                        "channel 'card' refused the batch charge: bad key"), True)
    assert breaker.consecutive_failures == 0


class Channel:
    name = "card"

    def __init__(self, *answers) -> None:
        self.script = Script(*answers)
        self.orders: list[tuple] = []

    async def charge(self, key, payer, payee, amount, reference, timeout_ms):
        self.orders.append((key, payer, payee, amount, reference))
        return await self.script(timeout_ms)


ORDER = ChargeOrder("pay_1.0", "payer", "payee", Money("USD", 100), "ref")


async def test_every_try_of_a_charge_carries_the_same_order() -> None:
    channel = Channel(ChannelUnavailable("x"), CAPTURED)
    assert await charge_with_retries(channel, failing_breaker(), ORDER, 300,
                                     NOW_MS + 1_000) is CAPTURED
    assert channel.orders == [("pay_1.0", "payer", "payee", Money("USD", 100), "ref")] * 2
    assert channel.script.timeouts == [300, 300]


class Settlement:
    def __init__(self, record: ChargeRecord | None) -> None:
        self.record = record
        self.asked: list[tuple[str, str]] = []

    async def settle(self, channel_name: str, key: str) -> ChargeRecord | None:
        self.asked.append((channel_name, key))
        return self.record


async def settle_after(answer, settled: ChargeRecord | None):
    settlement = Settlement(settled)
    outcome = await charge_and_settle(Channel(*answer), failing_breaker(), settlement, ORDER,
                                      300, NOW_MS + 1_000)
    return outcome, settlement.asked


async def test_charge_and_settle_returns_the_record_without_asking() -> None:
    assert await settle_after([CAPTURED], None) == (CAPTURED, [])


async def test_a_charge_never_sent_fails_without_settling() -> None:
    outcome, asked = await settle_after([ChannelUnreachable("x")] * 2, CAPTURED)
    assert outcome.reason is FailureReason.CHANNEL_UNAVAILABLE and asked == []


async def test_a_charge_that_may_have_been_made_is_settled_by_asking() -> None:
    voided = ChargeRecord("pay_1.0", "fence_1", ChargeStatus.VOIDED, fenced=True)
    outcome, asked = await settle_after([ChannelTimeout("slow")], voided)
    assert outcome == Failure(FailureReason.CHANNEL_TIMEOUT,
                              "channel 'card' did not answer in time")  # fenced: may fail over
    assert asked == [("card", "pay_1.0")]
    outcome, _ = await settle_after([ChannelTimeout("slow")], CAPTURED)
    assert outcome is CAPTURED  # it was made after all
    outcome, _ = await settle_after([ChannelTimeout("slow")], None)
    assert outcome == NoOutcome(Failure(FailureReason.CHANNEL_TIMEOUT,
                                        "channel 'card' did not answer in time"), True)


def test_what_a_definitive_record_means() -> None:
    assert charge_failure("card", CAPTURED) is None
    funds = ChargeRecord("k", "ch", ChargeStatus.DECLINED, decline_code="insufficient_funds",
                         decline_message="no money")
    assert charge_failure("card", funds) == Failure(FailureReason.INSUFFICIENT_FUNDS, "no money",
                                                    "insufficient_funds")
    bare = ChargeRecord("k", "ch", ChargeStatus.DECLINED, decline_code="stolen")
    assert charge_failure("card", bare) == Failure(FailureReason.DECLINED,
                                                   "declined by the channel", "stolen")
    voided = ChargeRecord("k", "ch", ChargeStatus.VOIDED)
    assert charge_failure("card", voided) == Failure(
        FailureReason.CHANNEL_REJECTED, "channel 'card' holds this charge as voided")
    assert decline_reason("insufficient_funds") is FailureReason.INSUFFICIENT_FUNDS
    assert decline_reason("") is FailureReason.DECLINED


# -- settlement calls (channel_retries) -----------------------------------------------


async def test_a_settlement_call_is_retried_with_growing_pauses(fixed_time) -> None:
    script = Script(ChannelCallError("a"), ChannelUnavailable("b"), "done")
    assert await retry_settlement_call(script, "test.retry") == "done"
    assert fixed_time == [channel_retries.RETRY_PAUSE_S, 2 * channel_retries.RETRY_PAUSE_S]


async def test_a_settlement_call_gives_up_after_its_tries(fixed_time) -> None:
    script = Script(*[ChannelTimeout("slow")] * 4)
    assert await retry_settlement_call(script, "test.retry") is None
    assert len(script.timeouts) == limits.SETTLEMENT_TRIES == 3
    assert await retry_settlement_call(Script("at once"), "test.retry") == "at once"


async def test_a_refused_settlement_call_is_not_repeated() -> None:
    script = Script(ChannelRefused("no such charge"), "never")
    with pytest.raises(ChannelRefused):
        await retry_settlement_call(script, "test.retry")
    assert len(script.timeouts) == 1
