"""The breaker's state machine, driven by an injected clock."""

from __future__ import annotations

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
