"""Per-channel circuit breaker: stop calling a channel that keeps failing.

CLOSED counts consecutive failures; at the threshold it OPENs and refuses
calls for `open_ms`; then HALF_OPEN lets one probe through, whose outcome
closes or reopens it. Declines are outcomes, not failures: only calls that
produced no answer count.
"""

from __future__ import annotations

import enum
import time
from typing import Callable


class BreakerState(enum.Enum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        open_ms: int = 5_000,
        monotonic_ms: Callable[[], float] = lambda: time.monotonic() * 1000,
    ) -> None:
        assert failure_threshold >= 1 and open_ms > 0
        self._threshold = failure_threshold
        self._open_ms = open_ms
        self._now_ms = monotonic_ms
        self._consecutive_failures = 0
        self._opened_at_ms: float | None = None
        self._probe_started_at_ms: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at_ms is None:
            return BreakerState.CLOSED
        if self._now_ms() - self._opened_at_ms >= self._open_ms:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def consecutive_failures(self) -> int:
        """Failed calls since the last success (read by metrics)."""
        return self._consecutive_failures

    def allow(self) -> bool:
        """Whether a call may go out now; a HALF_OPEN breaker lets one probe."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_pending():
            self._probe_started_at_ms = self._now_ms()
            return True
        return False

    def _probe_pending(self) -> bool:
        # A probe whose outcome never got recorded (its task died) expires,
        # so the breaker cannot stay shut for good.
        started = self._probe_started_at_ms
        return started is not None and self._now_ms() - started < self._open_ms

    def record_success(self) -> None:
        self._consecutive_failures = 0
        self._opened_at_ms = None
        self._probe_started_at_ms = None

    def record_failure(self) -> None:
        self._consecutive_failures += 1
        if self._probe_started_at_ms is not None or \
                self._consecutive_failures >= self._threshold:
            self._opened_at_ms = self._now_ms()
        self._probe_started_at_ms = None
