"""What the domain needs from storage. SQLite today, PostgreSQL tomorrow.

Every method is one transaction: when it returns, the change is durable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from paygrid_server.domain.model.payment import ChargeAttempt, Payment
from paygrid_server.domain.model.refund import Refund


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Position after the last payment of a page (newest first)."""

    received_at_us: int
    payment_id: str


class RefundExceedsRefundable(Exception):
    def __init__(self, leg_index: int, requested_minor: int, refundable_minor: int) -> None:
        self.leg_index = leg_index
        self.requested_minor = requested_minor
        self.refundable_minor = refundable_minor
        super().__init__(
            f"leg {leg_index}: refund of {requested_minor} exceeds the "
            f"{refundable_minor} minor units still refundable"
        )


class PaymentStore(Protocol):
    async def insert_payment(self, payment: Payment) -> Payment | None:
        """Stores a new payment with its legs and, for each leg with a
        first_channel, its first charge attempt there. When the tenant's
        idempotency key is taken, stores nothing and returns the payment
        that holds it."""
        ...

    async def get_payment(self, payment_id: str) -> Payment | None:
        """Whoever owns it: the caller checks the tenant."""
        ...

    async def list_payments(self, tenant_id: str, limit: int,
                            after: PageCursor | None) -> list[Payment]: ...

    async def list_processing_payments(self) -> list[Payment]: ...

    async def record_attempt(self, attempt: ChargeAttempt) -> None: ...

    async def attempted_channels(self, payment_id: str, leg_index: int) -> list[str]:
        """Every channel a Charge was (or may have been) sent to for the leg,
        first attempt first."""
        ...

    async def save_payment_outcome(self, payment: Payment) -> bool:
        """Stores status, failure, completion time and every leg at once;
        sets payment.version. False, writing nothing, when the stored
        payment is already final: the first final outcome stands (another
        replica's recovery finished it meanwhile), and is never rewritten
        without an event."""
        ...

    async def insert_refund(self, refund: Refund) -> Refund | None:
        """Reserves each leg's amount and stores the refund, atomically.
        Raises RefundExceedsRefundable when a leg has not enough left; when
        the key is taken for the payment, returns the refund holding it."""
        ...

    async def get_refund_by_key(self, payment_id: str, idempotency_key: str) -> Refund | None: ...

    async def save_refund_outcome(self, refund: Refund) -> None:
        """Moves each settled leg amount from pending to refunded (or back to
        refundable when the channel refused) and stores the refund's status."""
        ...

    async def list_pending_refunds(self) -> list[Refund]: ...

    def payment_may_be_running_elsewhere(self, payment: Payment) -> bool:
        """Whether another replica may be executing this stored payment now:
        no run has stored its outcome (a leg is PENDING), another replica
        stored it, and the hand-off time has not passed (until then it cannot
        be told from one whose replica crashed mid-payment). Always False for
        a store only one process opens."""
        ...

    def refund_may_be_running_elsewhere(self, refund: Refund) -> bool:
        """The same for a stored refund: PENDING, stored by another replica,
        the hand-off time not passed."""
        ...
