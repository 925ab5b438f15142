"""What every call goes through before its handler, in one interceptor:
request id and log context, metrics, load shedding, API key -> tenant.

One interceptor instead of four, and its wrapped handler built once per
method: each grpc.aio interceptor layer cost a call about 25 us (measured:
four layers took a no-op call from 190 to 300 us of server CPU), mostly in
per-call handler wrapping and generator-based context managers. What a call
needs from its caller (request id, API key) is read from its context.

Not a grpc.aio interceptor: it wraps the server's generic handlers
(`intercepted`), so grpc finds the wrapped handler by itself. A grpc.aio
interceptor, even one that only returns a cached handler, puts every call
through grpc's interceptor pipeline (coroutines awaited per call, about
5 us of a no-op call's server CPU). Tracing, when on, is a grpc.aio
interceptor and so runs outside it: the span is current in the call scope.
It keeps the handler it wraps per method, so nothing may sit between it and
the handlers that varies from call to call.

Order inside one call: the request id is bound and will be echoed whatever
happens; metrics see every outcome, shedding and authentication included;
shedding comes before authentication so an overloaded server spends
nothing on a call it refuses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc

from paygrid_server.api_keys import ApiKeyRegistry
from paygrid_server.domain.model.errors import InvalidRequest
from paygrid_server.observability.call_status import final_status_code
from paygrid_server.observability.metrics import PaygridMetrics
from paygrid_server.observability.request_context import (
    REQUEST_ID_HEADER,
    EchoingContext,
    bind_call_ids,
    echo_request_id,
    request_id_from,
)
from paygrid_server.observability.request_metrics import MethodInstruments
from paygrid_server.transport.api_key_authentication import authenticate, is_protected
from paygrid_server.transport.call_cutoff import CallCutoff, abort_cut_off
from paygrid_server.transport.handler_wrapping import wrap_handler
from paygrid_server.transport.load_shedding import (
    ConcurrencyLimit,
    LoadShedding,
    abort_overloaded,
)
from paygrid_server.transport.request_decoding import (
    decoding_handler,
    generated_request_class,
    parse_request,
)
from paygrid_server.transport.status_errors import abort_with


@dataclass(frozen=True, slots=True)
class _MethodPolicy:
    instruments: MethodInstruments
    limit: ConcurrencyLimit | None  # None: never shed
    registry: ApiKeyRegistry | None  # None: open (health, reflection)
    cutoff: CallCutoff | None  # None: grpc ends what a shutdown's grace leaves


class _CallScope:
    """One call's way through the steps; a class, not a generator-based
    context manager, because it runs on every call."""

    __slots__ = ("_policy", "_context", "_header", "_started", "_holds_slot", "_task")

    def __init__(self, policy: _MethodPolicy, context: grpc.aio.ServicerContext) -> None:
        self._policy = policy
        self._context = context
        self._holds_slot = False
        self._task = None

    async def __aenter__(self) -> EchoingContext:
        context = self._context
        self._started = time.perf_counter()
        # Read once: grpc builds the tuple anew on every invocation_metadata().
        metadata = context.invocation_metadata()
        self._header = (REQUEST_ID_HEADER, request_id_from(metadata))
        bind_call_ids(self._header[1])
        given = EchoingContext(context, self._header)
        if self._policy.cutoff is not None:
            self._task = self._policy.cutoff.enter()
        try:
            limit = self._policy.limit
            if limit is not None:
                # Checked and taken with no await in between: asyncio runs one
                # call's code at a time, so the count cannot overshoot.
                if limit.in_progress >= limit.max_in_progress:
                    limit.shed_total += 1
                    await abort_overloaded(given, limit)
                limit.in_progress += 1
                self._holds_slot = True
            if self._policy.registry is not None:
                await authenticate(given, self._policy.registry, metadata)
        except BaseException as error:
            # `async with` does not call __aexit__ when __aenter__ raises.
            await self.__aexit__(type(error), error, None)
            raise
        return given

    async def __aexit__(self, kind: Any, error: BaseException | None, traceback: Any) -> bool:
        if self._holds_slot:
            self._holds_slot = False
            self._policy.limit.in_progress -= 1
        cutoff = self._policy.cutoff
        if cutoff is not None:
            cutoff.leave(self._task)
            if cutoff.was_cut(error):
                try:
                    await abort_cut_off(EchoingContext(self._context, self._header))
                except BaseException as aborted:
                    self._observe(aborted)
                    raise
        # An abort sent the request id with it (EchoingContext); a cancelled
        # call sends nothing.
        if error is None or isinstance(error, Exception) and \
                not isinstance(error, grpc.aio.AbortError):
            echo_request_id(self._context, self._header)
        self._observe(error)
        return False

    def _observe(self, error: BaseException | None) -> None:
        self._policy.instruments.observe(final_status_code(self._context, error),
                                         time.perf_counter() - self._started)


class CallInterceptor:
    def __init__(self, metrics: PaygridMetrics, shedding: LoadShedding | None = None,
                 api_keys: ApiKeyRegistry | None = None,
                 cutoff: CallCutoff | None = None) -> None:
        self._metrics = metrics
        self._cutoff = cutoff
        self._shedding = shedding
        self._api_keys = api_keys
        self.wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def intercepted(self, generic: grpc.GenericRpcHandler) -> grpc.GenericRpcHandler:
        """`generic` with each of its methods' calls run in the call scope."""
        return _Intercepted(self, generic)

    def handler_for(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        wrapped = self.wrapped.get(method)
        if wrapped is not None:
            return wrapped
        policy = _MethodPolicy(
            MethodInstruments(self._metrics, method),
            self._shedding.limit_for(method) if self._shedding else None,
            self._api_keys if self._api_keys and is_protected(method) else None,
            self._cutoff)
        # Parsed inside the call scope: a request that does not parse is
        # INVALID_ARGUMENT (after authentication), not grpc's UNKNOWN.
        message_class = generated_request_class(handler)
        if not handler.request_streaming and not handler.response_streaming \
                and message_class is not None:
            wrapped = _unary_in_scope(handler, message_class, policy)
        else:
            wrapped = wrap_handler(decoding_handler(handler),
                                   lambda context: _CallScope(policy, context))
        self.wrapped[method] = wrapped
        return wrapped


def _unary_in_scope(handler: grpc.RpcMethodHandler, message_class: Any,
                    policy: _MethodPolicy) -> grpc.RpcMethodHandler:
    """What wrap_handler(decoding_handler(handler), scope) makes of a unary
    call (Pay's among them), as one coroutine: the two wrappers were two
    coroutines more on every call."""
    inner = handler.unary_unary

    async def behaviour(data: bytes, context: grpc.aio.ServicerContext) -> Any:
        async with _CallScope(policy, context) as given:
            try:
                request = parse_request(message_class, data)
            except InvalidRequest as error:
                await abort_with(given, error)
            return await inner(request, given)

    return grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=None, response_serializer=handler.response_serializer)


class _Intercepted(grpc.GenericRpcHandler):
    def __init__(self, interceptor: CallInterceptor, generic: grpc.GenericRpcHandler) -> None:
        self._interceptor = interceptor
        self._generic = generic

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        # Method names are unique across the server's handlers: a method
        # seen before is answered from the cache, whichever handler is asked.
        wrapped = self._interceptor.wrapped.get(details.method)
        if wrapped is not None:
            return wrapped
        handler = self._generic.service(details)
        if handler is None:
            # Not this handler's method (grpc asks the next one), or an
            # unknown method: neither kept nor counted, so a client cannot
            # grow the cache or the label set with made-up names.
            return None
        return self._interceptor.handler_for(details.method, handler)
