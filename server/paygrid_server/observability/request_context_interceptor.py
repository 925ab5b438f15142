"""Every log line of an RPC carries its request id and trace ids.

The request id is the caller's `x-request-id` when it is sane (a proxy such
as Envoy sets one), else a new one; it is echoed to the caller in the
response's trailing metadata, whatever status the call ends with. trace_id
and span_id are those of the RPC's server span. All are bound once per RPC
with structlog.contextvars, in the RPC's own task, so the tasks it starts (a
payment's execution, its legs, a batch run) log them too.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Sequence

import grpc
import structlog
from opentelemetry import trace

from paygrid_server.transport.handler_wrapping import wrap_handler

REQUEST_ID_HEADER = "x-request-id"
# Printable ASCII without spaces: UUIDs, Envoy's and most tracers' ids fit;
# anything longer or stranger is replaced rather than logged.
_SANE_REQUEST_ID = re.compile(r"[!-~]{1,128}")

Metadata = Sequence[tuple[str, str | bytes]]


def request_id_from(metadata: Metadata | None) -> str:
    for name, value in metadata or ():
        if name == REQUEST_ID_HEADER and isinstance(value, str) \
                and _SANE_REQUEST_ID.fullmatch(value):
            return value
    return str(uuid.uuid4())


def _with_header(context: grpc.aio.ServicerContext, trailing: Metadata,
                 header: tuple[str, str]) -> tuple:
    # An abort without trailing metadata of its own sends what was set before.
    return (*(trailing or context.trailing_metadata() or ()), header)


class _EchoingContext:
    """The call's context for the handlers within: an abort also sends the
    request id. Trailing metadata set after an abort is ignored by grpc, so
    it has to go with the abort itself."""

    def __init__(self, context: grpc.aio.ServicerContext, header: tuple[str, str]) -> None:
        self._context = context
        self._header = header

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def abort(self, code: grpc.StatusCode, details: str = "",
                    trailing_metadata: Metadata = ()) -> None:
        await self._context.abort(code, details,
                                  _with_header(self._context, trailing_metadata, self._header))


class RequestContextInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None:
            return handler
        header = (REQUEST_ID_HEADER, request_id_from(details.invocation_metadata))

        @asynccontextmanager
        async def in_request_context(context: grpc.aio.ServicerContext
                                     ) -> AsyncIterator[_EchoingContext]:
            ids = {"request_id": header[1]}
            # The tracing interceptor (outer) has made the server span current.
            span = trace.get_current_span().get_span_context()
            if span.is_valid:
                ids["trace_id"] = trace.format_trace_id(span.trace_id)
                ids["span_id"] = trace.format_span_id(span.span_id)
            # Not reset afterwards: the RPC's task ends with the call, and a
            # streaming handler may be finalised in another context.
            structlog.contextvars.bind_contextvars(**ids)
            try:
                yield _EchoingContext(context, header)
            except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
                raise  # sent with the abort; a cancelled call sends nothing
            except Exception:
                context.set_trailing_metadata(_with_header(context, (), header))
                raise
            # Trailing rather than initial metadata: it goes out with the
            # status, where initial metadata sent early would cost a write.
            context.set_trailing_metadata(_with_header(context, (), header))

        return wrap_handler(handler, in_request_context)
