"""Errors the domain raises; the transport maps each to one gRPC status."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str  # path in the request, e.g. "legs[2].amount.currency"
    description: str


class DomainError(Exception):
    """Base for failures that are the caller's to act on."""


class InvalidRequest(DomainError):
    def __init__(self, violations: list[FieldViolation]) -> None:
        assert violations, "an invalid request names at least one field"
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))


class NotFound(DomainError):
    def __init__(self, kind: str, ident: str) -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"{kind} {ident!r} not found")


class IdempotencyConflict(DomainError):
    """The key was used before with another request body."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"idempotency key {key!r} was already used with a different request; "
            "use a new key for a new payment"
        )


class RequestInProgress(DomainError):
    """The first request with this key is still running; retry later."""

    def __init__(self, key: str, retry_after_ms: int, subject: str = "idempotency key") -> None:
        self.key = key
        self.retry_after_ms = retry_after_ms
        super().__init__(
            f"a request with {subject} {key!r} is still in progress; "
            f"retry in {retry_after_ms} ms to get its result"
        )


class PreconditionFailed(DomainError):
    """The request is well formed but the target's state does not allow it."""

    def __init__(self, subject: str, kind: str, message: str) -> None:
        self.subject = subject
        self.kind = kind  # e.g. "REFUND_EXCEEDS_CAPTURED"
        super().__init__(message)


class AcceptedPaymentsAtLimit(DomainError):
    """As many payments as allowed were accepted (PayWait.ACCEPTED) and
    are still running: their calls have ended, so the calls limit no longer
    bounds them, this one does. Retry shortly with the same key."""

    def __init__(self, limit: int, retry_after_ms: int) -> None:
        self.limit = limit
        self.retry_after_ms = retry_after_ms
        super().__init__(
            f"server is at its limit of {limit} accepted payments still running; "
            f"retry in {retry_after_ms} ms (with the same idempotency key)"
        )


class OutOfRange(DomainError):
    """A position outside what the log holds: before what retention kept
    (EVENT_CURSOR_EXPIRED) or after its end (EVENT_CURSOR_AHEAD)."""

    def __init__(self, field: str, reason: str, message: str, **metadata: str) -> None:
        self.field = field
        self.reason = reason
        self.metadata = metadata
        super().__init__(message)


class DeadlineTooShort(DomainError):
    """The call's deadline, as the server received it, is under the minimum
    it accepts (which includes the part kept back to answer)."""

    def __init__(self, deadline_ms: int, minimum_ms: int) -> None:
        self.deadline_ms = deadline_ms
        self.minimum_ms = minimum_ms
        super().__init__(
            f"the call's deadline had {deadline_ms} ms left when it arrived; the minimum "
            f"accepted is {minimum_ms} ms: call again with a longer deadline"
        )
