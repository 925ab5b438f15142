"""When a failed call is tried again: which status codes, how many attempts,
how long to wait (exponential backoff with jitter, never sooner than the
server's RetryInfo asks).

Every paygrid.v1 call is idempotent (Pay and RefundPayment by their key,
SubmitBatch by its batch_id, the rest are reads), so a retry can never pay
twice; the key is made once per logical call, before the first attempt.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Callable

import grpc

from paygrid_client.errors import PaygridError

log = logging.getLogger("paygrid_client")

# Not executed, or not reachable: trying again is always safe.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})
# Refused before it ran because the server is overloaded: worth trying
# again only when the server says when (a RetryInfo); without one it is a
# local limit, such as a message too large.
RETRYABLE_WITH_RETRY_INFO_CODES = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED})
# The call may have run: trying again is safe only when it is idempotent.
RETRYABLE_IF_IDEMPOTENT_CODES = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED})
# The server refused the deadline itself as too short: the same deadline
# would be refused again.
DEADLINE_TOO_SHORT_REASON = "DEADLINE_TOO_SHORT"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries: at most `max_attempts` calls in all, waiting
    initial_backoff_s * backoff_multiplier**(n-1), capped at max_backoff_s,
    with jitter (between half and all of it), before retry n."""

    max_attempts: int = 8
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    backoff_multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("need 0 <= initial_backoff_s <= max_backoff_s")
        if self.backoff_multiplier < 1:
            raise ValueError(f"backoff_multiplier must be at least 1, got {self.backoff_multiplier}")

    def is_retryable(self, error: PaygridError, idempotent: bool) -> bool:
        if error.code in RETRYABLE_CODES:
            return True
        if error.code in RETRYABLE_WITH_RETRY_INFO_CODES:
            return error.retry_delay_s is not None
        return (idempotent and error.code in RETRYABLE_IF_IDEMPOTENT_CODES
                and error.reason != DEADLINE_TOO_SHORT_REASON)

    def delay_before_retry_s(self, error: PaygridError, failed_attempt: int,
                             idempotent: bool) -> float | None:
        """Seconds to wait before the next attempt; None: give up."""
        if failed_attempt >= self.max_attempts or not self.is_retryable(error, idempotent):
            return None
        backoff_s = min(self.max_backoff_s,
                        self.initial_backoff_s * self.backoff_multiplier ** (failed_attempt - 1))
        # Jitter spreads clients that failed together; the floor of half the
        # backoff keeps the growth exponential.
        jittered_s = backoff_s * (0.5 + random.random() / 2)
        return max(jittered_s, error.retry_delay_s or 0.0)


NO_RETRIES = RetryPolicy(max_attempts=1)


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """One failed attempt that will be tried again, after `delay_s`."""

    method: str
    failed_attempt: int
    error: PaygridError
    delay_s: float
    idempotency_key: str | None


RetryListener = Callable[[RetryEvent], None]


class Attempts:
    """The attempts of one logical call. After each failure it either says
    how long to wait before the next one or raises the PaygridError."""

    def __init__(self, policy: RetryPolicy, method: str, *, idempotency_key: str | None = None,
                 idempotent: bool = True, on_retry: RetryListener | None = None) -> None:
        self._policy = policy
        self._method = method
        self._idempotency_key = idempotency_key
        self._idempotent = idempotent
        self._on_retry = on_retry
        self.failed = 0

    def error(self, rpc_error: grpc.RpcError) -> PaygridError:
        return PaygridError.from_rpc_error(rpc_error, method=self._method,
                                           attempts=self.failed + 1,
                                           idempotency_key=self._idempotency_key)

    def delay_after(self, rpc_error: grpc.RpcError) -> float:
        """Seconds to wait before trying again; raises PaygridError to give up."""
        error = self.error(rpc_error)
        self.failed += 1
        delay_s = self._policy.delay_before_retry_s(error, self.failed, self._idempotent)
        if delay_s is None:
            raise error from rpc_error
        event = RetryEvent(self._method, self.failed, error, delay_s, self._idempotency_key)
        log.info("paygrid %s attempt %d failed with %s; retrying in %.3f s (key %s)",
                 self._method, self.failed, error.code.name, delay_s, self._idempotency_key)
        if self._on_retry is not None:
            self._on_retry(event)
        return delay_s
