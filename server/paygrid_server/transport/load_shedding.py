"""Load shedding: past a fixed number of calls in progress, a new call is
refused at once with RESOURCE_EXHAUSTED and a RetryInfo, instead of queueing
without bound behind the others (where it would only miss its deadline).

Batch streams have their own, smaller limit: one holds its slot for minutes.
Health checks and reflection are never shed, so probes tell the truth about
an overloaded but alive server.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator, NoReturn

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from paygrid_server.transport.handler_wrapping import wrap_handler
from paygrid_server.transport.status_errors import (
    abort_with_status,
    error_info,
    packed_details,
)

SHED_METHOD_PREFIX = "/paygrid.v1."
BATCH_STREAM_METHOD = "/paygrid.v1.BatchService/SubmitBatch"
RETRY_SHED_CALL_AFTER_MS = 200


class ConcurrencyLimit:
    """A counter, not a semaphore: nobody waits for a slot."""

    def __init__(self, name: str, max_in_progress: int) -> None:
        assert max_in_progress > 0
        self.name = name
        self.max_in_progress = max_in_progress
        self.in_progress = 0
        self.shed_total = 0


class LoadShedding(grpc.aio.ServerInterceptor):
    def __init__(self, max_concurrent_calls: int, max_concurrent_batch_streams: int) -> None:
        self.calls = ConcurrencyLimit("calls", max_concurrent_calls)
        self.batch_streams = ConcurrencyLimit("batch_streams", max_concurrent_batch_streams)

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or not details.method.startswith(SHED_METHOD_PREFIX):
            return handler
        limit = self.batch_streams if details.method == BATCH_STREAM_METHOD else self.calls

        @asynccontextmanager
        async def within_limit(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            # Checked and taken with no await in between: asyncio runs one
            # call's code at a time, so the count cannot overshoot.
            if limit.in_progress >= limit.max_in_progress:
                limit.shed_total += 1
                await _abort_overloaded(context, limit)
            limit.in_progress += 1
            try:
                yield
            finally:
                limit.in_progress -= 1

        return wrap_handler(handler, within_limit)


async def _abort_overloaded(context: grpc.aio.ServicerContext, limit: ConcurrencyLimit) -> NoReturn:
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(RETRY_SHED_CALL_AFTER_MS)
    message = (f"server is at its limit of {limit.max_in_progress} {limit.name.replace('_', ' ')} "
               "in progress; retry shortly (with the same idempotency key)")
    await abort_with_status(context, status_pb2.Status(
        code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=packed_details(
            error_info("OVERLOADED", limit=limit.name),
            error_details_pb2.RetryInfo(retry_delay=delay))))
