"""Domain errors as gRPC statuses with google.rpc error details.

Every status carries an ErrorInfo (domain "paygrid", a stable reason) plus
the detail that fits: BadRequest field violations, PreconditionFailure,
ResourceInfo or RetryInfo. Polyglot clients read them with their language's
grpc status helpers; grpcurl prints them.
"""

from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from paygrid_server.domain.model.errors import (
    AcceptedPaymentsAtLimit,
    DeadlineTooShort,
    DomainError,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    OutOfRange,
    PreconditionFailed,
    RequestInProgress,
)
from paygrid_server.domain.ports.storage_errors import StorageUnavailable

ERROR_DOMAIN = "paygrid"
# Storage faults pass (a lock freed, space made, a database back) in seconds
# or need a person; a client retrying sooner than this only adds load.
RETRY_STORAGE_AFTER_MS = 1_000


def retry_info(after_ms: int) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(after_ms)
    return error_details_pb2.RetryInfo(retry_delay=delay)


def packed_details(*details: Any) -> list[any_pb2.Any]:
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return packed


def error_info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)


def status_for(error: DomainError) -> status_pb2.Status:
    message = str(error)
    if isinstance(error, InvalidRequest):
        bad = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations])
        return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message,
                                 details=packed_details(error_info("INVALID_REQUEST"), bad))
    if isinstance(error, NotFound):
        resource = error_details_pb2.ResourceInfo(resource_type=error.kind,
                                                  resource_name=error.ident)
        return status_pb2.Status(code=code_pb2.NOT_FOUND, message=message,
                                 details=packed_details(error_info("NOT_FOUND"), resource))
    if isinstance(error, IdempotencyConflict):
        precondition = error_details_pb2.PreconditionFailure(violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type="IDEMPOTENCY_CONFLICT", subject="idempotency_key", description=message)])
        return status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message=message,
                                 details=packed_details(error_info("IDEMPOTENCY_CONFLICT"), precondition))
    if isinstance(error, RequestInProgress):
        return status_pb2.Status(
            code=code_pb2.ABORTED, message=message,
            details=packed_details(error_info("REQUEST_IN_PROGRESS"),
                                   retry_info(error.retry_after_ms)))
    if isinstance(error, PreconditionFailed):
        precondition = error_details_pb2.PreconditionFailure(violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type=error.kind, subject=error.subject, description=message)])
        return status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message=message,
                                 details=packed_details(error_info(error.kind), precondition))
    if isinstance(error, StorageUnavailable):
        # UNAVAILABLE, not RESOURCE_EXHAUSTED: it is the server's condition, not
        # the caller's quota, and retrying the same key later is safe (clients
        # retry UNAVAILABLE with backoff). ErrorInfo.metadata["fault"] says which.
        return status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message, details=packed_details(
            error_info("STORAGE_UNAVAILABLE", fault=error.fault.value),
            retry_info(RETRY_STORAGE_AFTER_MS)))
    if isinstance(error, AcceptedPaymentsAtLimit):
        # As load shedding refuses a call (OVERLOADED): the server's limit,
        # not the caller's quota, and nothing was stored.
        return status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message,
                                 details=packed_details(
                                     error_info("OVERLOADED", limit="accepted_payments"),
                                     retry_info(error.retry_after_ms)))
    if isinstance(error, OutOfRange):
        bad = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=error.field, description=message)])
        return status_pb2.Status(code=code_pb2.OUT_OF_RANGE, message=message, details=packed_details(
            error_info(error.reason, **error.metadata), bad))
    if isinstance(error, DeadlineTooShort):
        return status_pb2.Status(code=code_pb2.DEADLINE_EXCEEDED, message=message,
                                 details=packed_details(error_info(
                                     "DEADLINE_TOO_SHORT", deadline_ms=str(error.deadline_ms),
                                     minimum_deadline_ms=str(error.minimum_ms))))
    raise AssertionError(f"unmapped domain error {type(error).__name__}")


async def abort_with_status(context: grpc.aio.ServicerContext,
                            status: status_pb2.Status) -> NoReturn:
    """Ends the call with the status, its details in grpc-status-details-bin."""
    call_status = rpc_status.to_status(status)
    await context.abort(call_status.code, call_status.details, call_status.trailing_metadata)
    raise AssertionError("context.abort returns only by raising")


async def abort_with(context: grpc.aio.ServicerContext, error: DomainError) -> NoReturn:
    await abort_with_status(context, status_for(error))


Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Any]]


def maps_domain_errors(method: Handler) -> Handler:
    """Turns a DomainError raised by a servicer method into its status."""

    @functools.wraps(method)
    async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except DomainError as error:
            await abort_with(context, error)

    return handler


async def abort_unauthenticated(context: grpc.aio.ServicerContext, reason: str,
                                message: str) -> NoReturn:
    await abort_with_status(context, status_pb2.Status(
        code=code_pb2.UNAUTHENTICATED, message=message,
        details=packed_details(error_info(reason))))
