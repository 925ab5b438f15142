"""Times every call paygrid makes to one payment channel and counts the
ones that fail, by method; a grpc.aio client interceptor on that channel's
connection, so the channel adapter itself stays unaware of metrics."""

from __future__ import annotations

import asyncio
import time

import grpc

from paygrid_server.observability.metrics import PaygridMetrics


class ChannelMetricsInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, metrics: PaygridMetrics, channel: str) -> None:
        self._metrics = metrics
        self._channel = channel
        self._seconds_by_method: dict[str | bytes, object] = {}
        self._errors: dict[tuple[str | bytes, grpc.StatusCode], object] = {}

    async def intercept_unary_unary(self, continuation, details: grpc.aio.ClientCallDetails,
                                    request):
        started = time.perf_counter()
        call = await continuation(details, request)
        try:
            code = await call.code()
        except asyncio.CancelledError:
            self._observe(details.method, grpc.StatusCode.CANCELLED, started)
            raise
        self._observe(details.method, code, started)
        return call

    def _observe(self, method: str | bytes, code: grpc.StatusCode, started: float) -> None:
        seconds = self._seconds_by_method.get(method)
        if seconds is None:
            seconds = self._seconds_by_method[method] = self._metrics.channel_call_seconds.labels(
                self._channel, _short_name(method))
        seconds.observe(time.perf_counter() - started)
        if code is not grpc.StatusCode.OK:
            errors = self._errors.get((method, code))
            if errors is None:
                errors = self._errors[(method, code)] = self._metrics.channel_call_errors.labels(
                    self._channel, _short_name(method), code.name)
            errors.inc()


def _short_name(method: str | bytes) -> str:
    # grpc.aio hands clients the method as bytes (grpc/grpc#31092).
    if isinstance(method, bytes):
        method = method.decode()
    return method.rpartition("/")[2]
