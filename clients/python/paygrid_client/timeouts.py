"""Per-call deadlines, in seconds. Each attempt of a call gets its own
deadline; retries are bounded separately (RetryPolicy.max_attempts)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CallTimeouts:
    # The server spends the deadline (less 30 ms) on the legs; 10 s is its
    # own default budget when a call has none.
    pay_s: float = 10.0
    refund_s: float = 10.0
    # GetPayment, a ListPayments page, GetBatch.
    read_s: float = 5.0
    # A whole SubmitBatch stream: up to millions of items.
    batch_submit_s: float = 6 * 3600.0
    # A whole ListBatchItems stream.
    batch_items_s: float = 600.0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0")
