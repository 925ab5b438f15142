"""PaygridError: a failed call as one typed exception, carrying the
google.rpc details paygrid puts in every error status (ErrorInfo reason,
BadRequest field violations, PreconditionFailure, RetryInfo)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field (google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class PreconditionViolation:
    """Why the request cannot run in the current state
    (google.rpc.PreconditionFailure.Violation), e.g. IDEMPOTENCY_CONFLICT."""

    type: str
    subject: str
    description: str


class PaygridError(Exception):
    """A paygrid call that failed, after any retries.

    `reason` is the stable ErrorInfo reason (INVALID_REQUEST, NOT_FOUND,
    IDEMPOTENCY_CONFLICT, REQUEST_IN_PROGRESS, ...), None when the status
    did not come from paygrid (a connection failure, a local deadline).
    `idempotency_key` is the key the call was sent with: retrying later with
    it can never pay twice.
    """

    def __init__(self, code: grpc.StatusCode, message: str, *, reason: str | None = None,
                 metadata: Mapping[str, str] | None = None,
                 field_violations: Sequence[FieldViolation] = (),
                 precondition_violations: Sequence[PreconditionViolation] = (),
                 retry_delay_s: float | None = None, method: str = "",
                 attempts: int = 1, idempotency_key: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.field_violations = tuple(field_violations)
        self.precondition_violations = tuple(precondition_violations)
        self.retry_delay_s = retry_delay_s
        self.method = method
        self.attempts = attempts
        self.idempotency_key = idempotency_key

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, *, method: str = "", attempts: int = 1,
                       idempotency_key: str | None = None) -> "PaygridError":
        code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
        message = (error.details() if callable(getattr(error, "details", None)) else "") or ""
        found = cls(code, message, method=method, attempts=attempts,
                    idempotency_key=idempotency_key)
        status = _rich_status(error)
        if status is not None:
            found._read_details(status)
        return found

    @classmethod
    def from_status(cls, status: status_pb2.Status) -> "PaygridError":
        """A result's `failure.status` (a leg's, a payment's, a batch item's)
        read as a call error is: the same code, reason and retry delay."""
        code = next((c for c in grpc.StatusCode if c.value[0] == status.code),
                    grpc.StatusCode.UNKNOWN)
        found = cls(code, status.message)
        found._read_details(status)
        return found

    def _read_details(self, status: status_pb2.Status) -> None:
        for packed in status.details:
            info = error_details_pb2.ErrorInfo()
            bad_request = error_details_pb2.BadRequest()
            precondition = error_details_pb2.PreconditionFailure()
            retry = error_details_pb2.RetryInfo()
            if packed.Unpack(info):
                self.reason = info.reason
                self.metadata = dict(info.metadata)
            elif packed.Unpack(bad_request):
                self.field_violations += tuple(
                    FieldViolation(v.field, v.description) for v in bad_request.field_violations)
            elif packed.Unpack(precondition):
                self.precondition_violations += tuple(
                    PreconditionViolation(v.type, v.subject, v.description)
                    for v in precondition.violations)
            elif packed.Unpack(retry):
                self.retry_delay_s = retry.retry_delay.ToMicroseconds() / 1e6

    def __str__(self) -> str:
        head = self.code.name + (f" ({self.reason})" if self.reason else "")
        # With field violations the server's message only lists them again.
        lines = [f"{head}: {self.message}" if self.message and not self.field_violations
                 else head]
        lines += [f"  {v.field}: {v.description}" for v in self.field_violations]
        lines += [f"  {v.type} {v.subject}: {v.description}" for v in self.precondition_violations]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"PaygridError(code={self.code.name}, reason={self.reason!r}, "
                f"message={self.message!r}, attempts={self.attempts})")


def _rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    try:
        return rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ValueError, AttributeError, TypeError):
        # A status the transport made up (no grpc-status-details-bin), or one
        # whose details disagree with its code: keep code and message only.
        return None
