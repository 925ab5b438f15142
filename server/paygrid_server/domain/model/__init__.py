"""Plain data and the rules on it: money, payments, refunds, batches, errors, limits.
Imports nothing else of paygrid."""

from __future__ import annotations

from paygrid_server.domain.model.batch import (
    GroupingPolicy,
    FailurePolicy,
    BatchStatus,
    BatchItemStatus,
    BatchHeader,
    Batch,
    BatchItem,
    BatchGroup,
    BatchCounts,
    ItemResult,
)
from paygrid_server.domain.model.batch_validation import (
    BatchHeaderInput,
    TransactionInput,
    validate_header,
    validate_end_totals,
    validate_transaction,
)
from paygrid_server.domain.model.clock import (
    now_us,
    monotonic_ms,
)
from paygrid_server.domain.model.control_totals import (
    ControlTotals,
    parse_control_sum,
    major_units,
    ControlTally,
)
from paygrid_server.domain.model.currencies import (
    minor_units,
)
from paygrid_server.domain.model.errors import (
    FieldViolation,
    DomainError,
    InvalidRequest,
    NotFound,
    IdempotencyConflict,
    RequestInProgress,
    PreconditionFailed,
    DeadlineTooShort,
)
from paygrid_server.domain.model.money import (
    Money,
)
from paygrid_server.domain.model.payment import (
    PaymentMode,
    PaymentStatus,
    LegStatus,
    FailureReason,
    Failure,
    LegRequest,
    PaymentRequest,
    Leg,
    Payment,
    ChargeAttempt,
)
from paygrid_server.domain.model.redaction import (
    mask_account,
)
from paygrid_server.domain.model.refund import (
    RefundStatus,
    RefundLeg,
    Refund,
    RefundLegRequest,
    RefundRequest,
)
from paygrid_server.domain.model.request_validation import (
    MoneyInput,
    LegInput,
    PayInput,
    Violations,
    check_idempotency_key,
    check_text,
    check_money,
    check_metadata,
    validate_pay,
)

__all__ = [
    "Batch",
    "BatchCounts",
    "BatchGroup",
    "BatchHeader",
    "BatchHeaderInput",
    "BatchItem",
    "BatchItemStatus",
    "BatchStatus",
    "ChargeAttempt",
    "ControlTally",
    "ControlTotals",
    "DeadlineTooShort",
    "DomainError",
    "Failure",
    "FailurePolicy",
    "FailureReason",
    "FieldViolation",
    "GroupingPolicy",
    "IdempotencyConflict",
    "InvalidRequest",
    "ItemResult",
    "Leg",
    "LegInput",
    "LegRequest",
    "LegStatus",
    "Money",
    "MoneyInput",
    "NotFound",
    "PayInput",
    "Payment",
    "PaymentMode",
    "PaymentRequest",
    "PaymentStatus",
    "PreconditionFailed",
    "Refund",
    "RefundLeg",
    "RefundLegRequest",
    "RefundRequest",
    "RefundStatus",
    "RequestInProgress",
    "TransactionInput",
    "Violations",
    "check_idempotency_key",
    "check_metadata",
    "check_money",
    "check_text",
    "major_units",
    "mask_account",
    "minor_units",
    "monotonic_ms",
    "now_us",
    "parse_control_sum",
    "validate_end_totals",
    "validate_header",
    "validate_pay",
    "validate_transaction",
]
