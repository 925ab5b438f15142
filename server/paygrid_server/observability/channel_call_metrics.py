"""Times every call paygrid makes to one payment channel and counts the
ones that fail, by method. The channel adapter reports each call's end to
it (GrpcPaymentChannel's `observe_call`): a grpc.aio client interceptor
would see the same calls, but grpc.aio makes an extra task and call object
for every call through one (a batch group's ChargeBatch among them)."""

from __future__ import annotations

import grpc

from paygrid_server.observability.metrics import PaygridMetrics


class ChannelCallMetrics:
    def __init__(self, metrics: PaygridMetrics, channel: str) -> None:
        self._metrics = metrics
        self._channel = channel
        self._seconds_by_method: dict[str, object] = {}
        self._errors: dict[tuple[str, grpc.StatusCode], object] = {}

    def observe(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        """One call of `method` (its short name: "Charge") ended with `code`."""
        timer = self._seconds_by_method.get(method)
        if timer is None:
            timer = self._seconds_by_method[method] = self._metrics.channel_call_seconds.labels(
                self._channel, method)
        timer.observe(seconds)
        if code is not grpc.StatusCode.OK:
            errors = self._errors.get((method, code))
            if errors is None:
                errors = self._errors[(method, code)] = self._metrics.channel_call_errors.labels(
                    self._channel, method, code.name)
            errors.inc()
