"""The breaker's state machine, driven by an injected clock."""

from __future__ import annotations

import time

from paygrid_server.domain.charging.circuit_breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now_ms = 0.0

    def __call__(self) -> float:
        return self.now_ms


def test_opens_after_consecutive_failures_and_probes_once_after_the_pause() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, open_ms=1_000, monotonic_ms=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    breaker.record_success()  # a success resets the count
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now_ms = 1_000
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()          # one probe...
    assert not breaker.allow()      # ...at a time
    breaker.record_failure()        # the probe failed: open again, for a full pause
    assert breaker.state is BreakerState.OPEN
    clock.now_ms = 2_000
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_a_probe_that_never_reports_back_expires() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, open_ms=1_000, monotonic_ms=clock)
    breaker.record_failure()
    clock.now_ms = 1_000
    assert breaker.allow()
    clock.now_ms = 1_500
    assert not breaker.allow()
    clock.now_ms = 2_000
    assert breaker.allow()


def test_a_success_resets_the_failure_count() -> None:
    # Two failures, a success, two failures: never three in a row, so the
    # breaker stays closed. Without the reset it would open at the fourth.
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, open_ms=1_000, monotonic_ms=clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.consecutive_failures == 2
    breaker.record_success()
    assert breaker.consecutive_failures == 0
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()  # the third in a row: exactly at the threshold
    assert breaker.state is BreakerState.OPEN


def test_a_good_probe_clears_its_marker_and_closes_for_good() -> None:
    # After a successful probe the breaker is closed with no probe pending:
    # a later failure is one failure (not a failed probe reopening it), and a
    # later opening lets its own probe through at once.
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, open_ms=1_000, monotonic_ms=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now_ms = 1_000
    assert breaker.allow()  # the probe
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.consecutive_failures == 0
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED  # one failure, under the threshold
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now_ms = 2_000  # the whole pause, and no stale probe holding it shut
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allow()


def test_the_pause_is_open_ms_exactly() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, open_ms=1_000, monotonic_ms=clock)
    clock.now_ms = 500
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now_ms = 1_499
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now_ms = 1_500
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    clock.now_ms = 2_499  # the probe is pending for open_ms, then expires
    assert not breaker.allow()
    clock.now_ms = 2_500
    assert breaker.allow()


def test_a_failed_probe_reopens_even_under_the_threshold() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, open_ms=1_000, monotonic_ms=clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now_ms = 1_000
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN  # reopened at 1_000 for a full pause
    clock.now_ms = 1_999
    assert breaker.state is BreakerState.OPEN
    breaker.record_success()  # a late answer from an earlier call closes it
    assert breaker.state is BreakerState.CLOSED


def test_the_defaults_and_the_real_clock() -> None:
    breaker = CircuitBreaker()
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED  # the default threshold is 5
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and breaker.allow() is False  # 5 s pause
    now = {"ms": 0.0}
    paused = CircuitBreaker(failure_threshold=1, monotonic_ms=lambda: now["ms"])
    paused.record_failure()
    now["ms"] = 4_999
    assert paused.state is BreakerState.OPEN
    now["ms"] = 5_000
    assert paused.state is BreakerState.HALF_OPEN


def test_the_default_clock_is_monotonic_milliseconds() -> None:
    # The pause is in ms: a clock in seconds (or off by a factor) would keep
    # a failing channel shut for hours or let it through at once.
    breaker = CircuitBreaker()
    before_ms = time.monotonic() * 1_000
    now_ms = breaker._now_ms()
    after_ms = time.monotonic() * 1_000
    assert before_ms <= now_ms <= after_ms
