"""PaymentsFirst on its own (domain/payments_first.py): a batch step waits
while callers wait for payments, here or in sibling workers, until the
last of them ends or the yield has passed. The loop is turned by hand:
what a step waits for is made to happen, never waited out."""

from __future__ import annotations

import asyncio

import pytest

from paygrid_server.domain.model import limits
from paygrid_server.domain.payments_first import PaymentsFirst
from tests.support.loop_turns import turns

LONGEST = limits.BATCH_YIELD_TO_PAYMENTS_MAX_MS


class Siblings:
    """The other workers' payments, set by hand; what this one published."""

    def __init__(self) -> None:
        self.others = 0
        self.published: list[int] = []

    def publish(self, running: int) -> None:
        self.published.append(running)

    def running(self) -> int:
        return self.others


async def test_a_batch_step_goes_at_once_when_no_caller_waits_for_a_payment() -> None:
    first = PaymentsFirst(LONGEST)
    first.payment_started()
    first.payment_ended()
    step = asyncio.ensure_future(first.batch_turn())
    await turns(1)
    assert step.done()
    assert (first.batch_steps_yielded, first.batch_yielded_s) == (0, 0.0)


async def test_a_batch_step_waits_until_the_last_running_payment_ends() -> None:
    first = PaymentsFirst(LONGEST)
    first.payment_started()
    first.payment_started()
    steps = [asyncio.ensure_future(first.batch_turn()) for _ in range(2)]
    await turns()
    assert not any(step.done() for step in steps)
    first.payment_ended()
    await turns()
    assert not any(step.done() for step in steps)  # one payment still runs
    first.payment_ended()
    await turns()
    assert all(step.done() for step in steps)
    assert first.batch_steps_yielded == 2
    assert first.batch_yielded_s < 2 * LONGEST / 1_000  # woken, not timed out


async def test_payments_that_keep_running_hold_a_step_for_the_yield_only() -> None:
    first = PaymentsFirst(1)
    first.payment_started()
    await asyncio.wait_for(first.batch_turn(), 30)
    assert first.batch_steps_yielded == 1
    assert first.batch_yielded_s > 0


async def test_a_step_waits_while_a_sibling_worker_s_payments_run_until_they_end() -> None:
    siblings = Siblings()
    first = PaymentsFirst(LONGEST, siblings)
    siblings.others = 2
    step = asyncio.ensure_future(first.batch_turn())
    await turns()
    assert not step.done()
    siblings.others = 0
    await asyncio.wait_for(step, 30)  # seen on its next look, not at the yield's end
    assert first.batch_steps_yielded == 1
    assert first.batch_yielded_s < LONGEST / 1_000


async def test_a_step_waits_for_this_process_s_payments_and_then_its_siblings() -> None:
    siblings = Siblings()
    first = PaymentsFirst(LONGEST, siblings)
    first.payment_started()
    siblings.others = 1
    step = asyncio.ensure_future(first.batch_turn())
    first.payment_ended()
    await turns()
    assert not step.done()  # a sibling's payment still runs
    siblings.others = 0
    await asyncio.wait_for(step, 30)
    assert first.batch_steps_yielded == 1


async def test_a_sibling_s_payments_that_keep_running_hold_a_step_for_the_yield_only() -> None:
    siblings = Siblings()
    first = PaymentsFirst(1, siblings)
    siblings.others = 1
    await asyncio.wait_for(first.batch_turn(), 30)
    assert first.batch_steps_yielded == 1


async def test_this_process_s_running_payments_are_published_to_its_siblings() -> None:
    siblings = Siblings()
    first = PaymentsFirst(0, siblings)  # published whatever the yield
    first.payment_started()
    first.payment_started()
    first.payment_ended()
    first.payment_ended()
    assert siblings.published == [1, 2, 1, 0]


async def test_a_yield_of_0_never_holds_a_step() -> None:
    siblings = Siblings()
    siblings.others = 1
    first = PaymentsFirst(0, siblings)
    first.payment_started()
    step = asyncio.ensure_future(first.batch_turn())
    await turns(1)
    assert step.done()
    assert first.batch_steps_yielded == 0


@pytest.mark.parametrize("yield_ms", [-1, LONGEST + 1])
def test_a_yield_outside_0_to_the_longest_is_a_bug(yield_ms: int) -> None:
    PaymentsFirst(0)
    PaymentsFirst(LONGEST)
    with pytest.raises(AssertionError):
        PaymentsFirst(yield_ms)
