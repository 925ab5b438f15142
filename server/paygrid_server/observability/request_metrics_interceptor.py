"""Counts every RPC the server handles and times it, by method and final
status code: unary and streaming, including calls that end by
context.abort, by an exception or by being cancelled."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import grpc

from paygrid_server.observability.call_status import final_status_code
from paygrid_server.observability.metrics import PaygridMetrics
from paygrid_server.transport.handler_wrapping import wrap_handler


class _MethodInstruments:
    """One method's labelled children, made once per status code, so a call
    costs dictionary look-ups rather than label resolution."""

    def __init__(self, metrics: PaygridMetrics, full_method: str) -> None:
        self._metrics = metrics
        self._service, _, self._method = full_method.lstrip("/").partition("/")
        self._by_code: dict[grpc.StatusCode, tuple] = {}

    def observe(self, code: grpc.StatusCode, seconds: float) -> None:
        children = self._by_code.get(code)
        if children is None:
            labels = (self._service, self._method, code.name)
            children = (self._metrics.server_handled.labels(*labels),
                        self._metrics.server_handling_seconds.labels(*labels))
            self._by_code[code] = children
        handled, handling_seconds = children
        handled.inc()
        handling_seconds.observe(seconds)


class RequestMetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: PaygridMetrics) -> None:
        self._metrics = metrics
        self._methods: dict[str, _MethodInstruments] = {}

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None:
            # An unknown method: not counted, so a client cannot grow the
            # label set with made-up names.
            return handler
        instruments = self._methods.get(details.method)
        if instruments is None:
            instruments = self._methods[details.method] = _MethodInstruments(
                self._metrics, details.method)

        @asynccontextmanager
        async def measured(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                yield
            except BaseException as caught:
                error = caught
                raise
            finally:
                instruments.observe(final_status_code(context, error),
                                    time.perf_counter() - started)

        return wrap_handler(handler, measured)
