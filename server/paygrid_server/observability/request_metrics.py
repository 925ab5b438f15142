"""Counts every RPC the server handles and times it, by method and final
status code (observability/call_status.py): unary and streaming, including
calls that end by context.abort, by an exception or by being cancelled."""

from __future__ import annotations

import grpc

from paygrid_server.observability.metrics import PaygridMetrics


class MethodInstruments:
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
