"""Runs code around a gRPC method handler, whatever its kind.

grpc.aio interceptors get the handler, not the call: to act on the call
itself (its context, its outcome) an interceptor returns a new handler of
the same kind whose behaviour wraps the original one.
"""

from __future__ import annotations

import inspect
from contextlib import AbstractAsyncContextManager
from typing import Any, Callable

import grpc

# What `around(context)` yields, if not None, is the context the handler is
# given instead (a wrapper that adds to what the call sends).
Around = Callable[[grpc.aio.ServicerContext], AbstractAsyncContextManager[Any]]


def behaviour_and_maker(handler: grpc.RpcMethodHandler) -> tuple[Callable[..., Any],
                                                                  Callable[..., Any]]:
    """The handler's behaviour, and grpc's constructor for a handler of its kind."""
    kinds = {
        (False, False): (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
        (False, True): (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
        (True, False): (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
        (True, True): (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
    }
    return kinds[(handler.request_streaming, handler.response_streaming)]


def wrap_handler(handler: grpc.RpcMethodHandler, around: Around) -> grpc.RpcMethodHandler:
    """The same handler, each call running inside `around(context)`."""
    inner, make = behaviour_and_maker(handler)

    # grpc.aio also takes a streaming handler written as a coroutine that
    # sends with context.write (grpc_health's Watch is one): wrapped as such.
    if handler.response_streaming and inspect.isasyncgenfunction(inner):
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with around(context) as given:
                async for response in inner(request, given or context):
                    yield response
    else:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with around(context) as given:
                return await inner(request, given or context)

    return make(behaviour, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
