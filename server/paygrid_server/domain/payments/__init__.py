"""Real-time payments and refunds: the Pay use case, its legs, completion and
recovery after a crash."""

from __future__ import annotations

from paygrid_server.domain.payments.completion import (
    PaymentCompletion,
)
from paygrid_server.domain.payments.leg_dispatch import (
    apply_charge_record,
    LegDispatcher,
)
from paygrid_server.domain.payments.payment_service import (
    refuse_too_short_deadline,
    payment_budget_ms,
    owned_payment,
    bind_payment_ids,
    PaymentService,
)
from paygrid_server.domain.payments.recovery import (
    PaymentRecovery,
)
from paygrid_server.domain.payments.refund_service import (
    RefundLegInput,
    RefundInput,
    validate_refund,
    RefundService,
)

__all__ = [
    "LegDispatcher",
    "PaymentCompletion",
    "PaymentRecovery",
    "PaymentService",
    "RefundInput",
    "RefundLegInput",
    "RefundService",
    "apply_charge_record",
    "bind_payment_ids",
    "owned_payment",
    "payment_budget_ms",
    "refuse_too_short_deadline",
    "validate_refund",
]
