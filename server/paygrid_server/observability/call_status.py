"""The status code a server-side RPC ended with, as its client sees it.

grpc.aio tells an interceptor nothing about the outcome, so it is worked out
from how the handler ended and what it set on its context.
"""

from __future__ import annotations

import asyncio

import grpc

# The client's deadline timer starts before the server's (which starts when
# the headers arrive), so the client usually gives up, and cancels the
# stream, a little before the server's deadline passes: on a loaded machine
# tens of ms before. A cancellation this close to the deadline is the
# deadline; one earlier is the client's own choice.
DEADLINE_SKEW_S = 0.25

def final_status_code(context: grpc.aio.ServicerContext,
                      error: BaseException | None) -> grpc.StatusCode:
    if error is None or isinstance(error, grpc.aio.AbortError):
        # context.abort and context.set_code both leave the code on the context.
        code = context.code()
        if code is None:
            return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN
        return code
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        # gRPC cancels the handler both when the client cancels and when the
        # deadline passes; only the remaining time tells them apart.
        remaining_s = context.time_remaining()
        if remaining_s is not None and remaining_s <= DEADLINE_SKEW_S:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN  # what gRPC answers for an unhandled exception

