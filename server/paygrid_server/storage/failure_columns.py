"""A Failure as three nullable columns: reason, message, decline code."""

from __future__ import annotations

from paygrid_server.domain.model.payment import Failure, FailureReason


def failure_columns(failure: Failure | None) -> tuple:
    if failure is None:
        return (None, None, None)
    return (failure.reason.value, failure.message, failure.decline_code)


def failure_from_columns(reason: str | None, message: str | None, decline_code: str | None) -> Failure | None:
    if reason is None:
        return None
    return Failure(FailureReason(reason), message or "", decline_code or "")
