"""Every log line of an RPC carries its request id (and trace ids when
tracing is on); the pieces transport/call_interceptor.py puts together.

The request id is the caller's `x-request-id` when it is sane (a proxy such
as Envoy sets one), else a new one; it is echoed to the caller in the
response's trailing metadata, whatever status the call ends with. trace_id
and span_id are those of the RPC's server span. All are bound once per RPC
with structlog.contextvars, in the RPC's own task, so the tasks it starts (a
payment's execution, its legs, a batch run) log them too.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import grpc
import structlog
from opentelemetry import trace

from paygrid_server.domain.model.random_bits import uuid4_str


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
    return uuid4_str()


def _with_header(context: grpc.aio.ServicerContext, trailing: Metadata,
                 header: tuple[str, str]) -> tuple:
    # An abort without trailing metadata of its own sends what was set before.
    return (*(trailing or context.trailing_metadata() or ()), header)


class EchoingContext:
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


def bind_call_ids(request_id: str) -> None:
    """Binds the call's ids for every log line of its task and the tasks it
    starts. Not reset afterwards: the RPC's task ends with the call, and a
    streaming handler may be finalised in another context."""
    ids = {"request_id": request_id}
    # The tracing interceptor (outer), when tracing is on, made the server
    # span current.
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        ids["trace_id"] = trace.format_trace_id(span.trace_id)
        ids["span_id"] = trace.format_span_id(span.span_id)
    structlog.contextvars.bind_contextvars(**ids)


def echo_request_id(context: grpc.aio.ServicerContext, header: tuple[str, str]) -> None:
    """Trailing rather than initial metadata: it goes out with the status,
    where initial metadata sent early would cost a write."""
    context.set_trailing_metadata(_with_header(context, (), header))
