"""Calls still running when the shutdown grace ends are ended by paygrid,
not by grpc: UNAVAILABLE with a RetryInfo, so clients retry them.

grpc's own Server.stop(grace) cancels what is left once its grace is over:
a unary call then ends CANCELLED (which clients do not retry) and a stream
UNAVAILABLE "Cancelling all calls" with no RetryInfo (issue 14, item 8).
Every call registers its task here (call_interceptor.py); at the grace the
app cancels them itself, and each call's scope turns that cancellation into
this status. What the call had done is stored or resumable, as after a
crash, so retrying with the same idempotency key or batch_id is safe.
"""

from __future__ import annotations

import asyncio
from typing import NoReturn

import grpc
from google.rpc import code_pb2, status_pb2

from paygrid_server.transport.status_errors import (
    abort_with_status,
    error_info,
    packed_details,
    retry_info,
)

# A restarted server (or another replica) answers within about this long.
RETRY_AFTER_SHUTDOWN_MS = 1_000


class CallCutoff:
    def __init__(self) -> None:
        self._calls: set[asyncio.Task] = set()
        self.cutting = False

    def enter(self) -> asyncio.Task | None:
        task = asyncio.current_task()
        if task is not None:
            self._calls.add(task)
        return task

    def leave(self, task: asyncio.Task | None) -> None:
        self._calls.discard(task)

    def cut(self) -> int:
        """Cancels every call in progress; each ends as cut_off_status says."""
        self.cutting = True
        calls = list(self._calls)
        for task in calls:
            task.cancel()
        return len(calls)

    def was_cut(self, error: BaseException | None) -> bool:
        return self.cutting and isinstance(error, asyncio.CancelledError)


async def abort_cut_off(context: grpc.aio.ServicerContext) -> NoReturn:
    await abort_with_status(context, status_pb2.Status(
        code=code_pb2.UNAVAILABLE,
        message="the server is shutting down and its grace period ended before this call; "
                "retry with the same idempotency key or batch_id (on another replica, or "
                "here once restarted): nothing already done is repeated",
        details=packed_details(error_info("SHUTTING_DOWN"),
                               retry_info(RETRY_AFTER_SHUTDOWN_MS))))
