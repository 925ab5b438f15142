"""A leg's, payment's or batch item's Failure as a google.rpc.Status.

The one mapping from failure reason to gRPC code and retry delay, so a
result's `failure.status` reads like a call error (docs/api/errors.md).
RetryInfo goes only where a new attempt can succeed without anyone acting
(a new payment, or resubmitting the batch); never on a decline (the payer
must act) nor on an unknown outcome (a second payment could charge twice
while the first one is still being resolved).
"""

from __future__ import annotations

from dataclasses import dataclass

from google.rpc import code_pb2, status_pb2

from paygrid_server.domain.model.payment import Failure, FailureReason
from paygrid_server.transport.status_errors import error_info, packed_details, retry_info

# A channel that was down or too slow is usually back within a second or
# two; sooner only adds load to it.
RETRY_CHANNEL_AFTER_MS = 1_000
# The circuit breaker's default pause (config breaker_open_ms): before it
# ends, a new payment is routed around the channel or fails the same way.
RETRY_CIRCUIT_AFTER_MS = 5_000


@dataclass(frozen=True, slots=True)
class FailureCode:
    code: int  # google.rpc.Code
    retry_after_ms: int | None = None  # None: no RetryInfo


FAILURE_CODES: dict[FailureReason, FailureCode] = {
    # Outcomes: the channel said no. FAILED_PRECONDITION, as for a call the
    # payer's state refuses: retrying changes nothing until the payer acts.
    FailureReason.DECLINED: FailureCode(code_pb2.FAILED_PRECONDITION),
    FailureReason.INSUFFICIENT_FUNDS: FailureCode(code_pb2.FAILED_PRECONDITION),
    # Channel faults: nothing was charged; a new payment may go through.
    FailureReason.CHANNEL_TIMEOUT: FailureCode(code_pb2.DEADLINE_EXCEEDED,
                                               RETRY_CHANNEL_AFTER_MS),
    FailureReason.CHANNEL_UNAVAILABLE: FailureCode(code_pb2.UNAVAILABLE, RETRY_CHANNEL_AFTER_MS),
    FailureReason.CIRCUIT_OPEN: FailureCode(code_pb2.UNAVAILABLE, RETRY_CIRCUIT_AFTER_MS),
    # The channel refused the call itself, and would refuse it again.
    FailureReason.CHANNEL_REJECTED: FailureCode(code_pb2.FAILED_PRECONDITION),
    # No configured channel takes this currency and amount.
    FailureReason.NO_ELIGIBLE_CHANNEL: FailureCode(code_pb2.FAILED_PRECONDITION),
    # Not UNKNOWN: gRPC libraries give UNKNOWN to a handler that raised, so
    # clients and dashboards read it as a server bug. DEADLINE_EXCEEDED is
    # gRPC's own "may have completed even so", which is this exactly.
    FailureReason.OUTCOME_UNKNOWN: FailureCode(code_pb2.DEADLINE_EXCEEDED),
    # Stopped (a restart) or reversed because of another leg or item: the
    # cause is elsewhere (the payment's failure, the item that failed).
    FailureReason.INTERRUPTED: FailureCode(code_pb2.ABORTED, RETRY_CHANNEL_AFTER_MS),
    FailureReason.OTHER_LEG_FAILED: FailureCode(code_pb2.ABORTED),
    FailureReason.OTHER_ITEM_FAILED: FailureCode(code_pb2.ABORTED),
    FailureReason.BATCH_STOPPED: FailureCode(code_pb2.ABORTED),
    # Resubmitting the batch (same batch_id) finishes the reversal.
    FailureReason.REVERSAL_PENDING: FailureCode(code_pb2.ABORTED, RETRY_CHANNEL_AFTER_MS),
    # Refused on arrival; the rest of the batch goes on.
    FailureReason.INVALID_ITEM: FailureCode(code_pb2.INVALID_ARGUMENT),
    FailureReason.DUPLICATE_REFERENCE: FailureCode(code_pb2.ALREADY_EXISTS),
    FailureReason.REFERENCE_CONFLICT: FailureCode(code_pb2.ALREADY_EXISTS),
    FailureReason.BATCH_LIMIT: FailureCode(code_pb2.RESOURCE_EXHAUSTED),
    # As the call error that ends the stream.
    FailureReason.CONTROL_TOTALS_MISMATCH: FailureCode(code_pb2.FAILED_PRECONDITION),
}


def failure_status(failure: Failure) -> status_pb2.Status:
    mapped = FAILURE_CODES[failure.reason]
    metadata = {"decline_code": failure.decline_code} if failure.decline_code else {}
    details = [error_info(failure.reason.value, **metadata)]
    if mapped.retry_after_ms is not None:
        details.append(retry_info(mapped.retry_after_ms))
    return status_pb2.Status(code=mapped.code, message=failure.message,
                             details=packed_details(*details))
