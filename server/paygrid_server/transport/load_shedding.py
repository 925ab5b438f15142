"""Load shedding: past a fixed number of calls in progress, a new call is
refused at once with RESOURCE_EXHAUSTED and a RetryInfo, instead of queueing
without bound behind the others (where it would only miss its deadline).

Batch streams have their own, smaller limit: one holds its slot for minutes.
Event watch streams too, a large one: a watcher holds its slot for hours
while costing no CPU, so thousands of them must not take Pay's slots.
Health checks and reflection are never shed, so probes tell the truth about
an overloaded but alive server.
"""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from paygrid_server.transport.status_errors import error_info, packed_details, retry_info

SHED_METHOD_PREFIX = "/paygrid.v1."
BATCH_STREAM_METHOD = "/paygrid.v1.BatchService/SubmitBatch"
WATCH_STREAM_METHOD = "/paygrid.v1.EventService/WatchEvents"
RETRY_SHED_CALL_AFTER_MS = 200


class ConcurrencyLimit:
    """A counter, not a semaphore: nobody waits for a slot."""

    def __init__(self, name: str, max_in_progress: int) -> None:
        assert max_in_progress > 0
        self.name = name
        self.max_in_progress = max_in_progress
        self.in_progress = 0
        self.shed_total = 0
        # Built once: refusing must cost as little as possible, since an
        # overloaded server refuses more calls than it serves.
        self.shed_status = rpc_status.to_status(_shed_status(self))


def _shed_status(limit: ConcurrencyLimit) -> status_pb2.Status:
    message = (f"server is at its limit of {limit.max_in_progress} {limit.name.replace('_', ' ')} "
               "in progress; retry shortly (with the same idempotency key)")
    return status_pb2.Status(
        code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=packed_details(
            error_info("OVERLOADED", limit=limit.name),
            retry_info(RETRY_SHED_CALL_AFTER_MS)))


class LoadShedding:
    """The limits; transport/call_interceptor.py applies them to each call."""

    def __init__(self, max_concurrent_calls: int, max_concurrent_batch_streams: int,
                 max_event_watchers: int = 10_000) -> None:
        self.calls = ConcurrencyLimit("calls", max_concurrent_calls)
        self.batch_streams = ConcurrencyLimit("batch_streams", max_concurrent_batch_streams)
        self.event_watchers = ConcurrencyLimit("event_watchers", max_event_watchers)
        self._streams = {BATCH_STREAM_METHOD: self.batch_streams,
                         WATCH_STREAM_METHOD: self.event_watchers}

    def limit_for(self, method: str) -> ConcurrencyLimit | None:
        """None: the method is never shed."""
        if not method.startswith(SHED_METHOD_PREFIX):
            return None
        return self._streams.get(method, self.calls)


async def abort_overloaded(context: grpc.aio.ServicerContext, limit: ConcurrencyLimit) -> NoReturn:
    status = limit.shed_status
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("context.abort returns only by raising")
