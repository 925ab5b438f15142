"""One app's metrics, tracing and log context, built from its configuration:
what app.py plugs into the gRPC server, the channel connections and the
batch servicer, and stops with the app."""

from __future__ import annotations

from typing import Mapping

import grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from paygrid_server.channels.grpc_payment_channel import CallObserver
from paygrid_server.config import ObservabilityConfig
from paygrid_server.domain.batches.events import BatchEvent
from paygrid_server.domain.charging.circuit_breaker import CircuitBreaker
from paygrid_server.domain.events.event_relay import RelayStats
from paygrid_server.domain.payments_first import PaymentsFirst
from paygrid_server.observability import tracing
from paygrid_server.observability.batch_metrics import BatchMetrics
from paygrid_server.observability.channel_call_metrics import ChannelCallMetrics
from paygrid_server.observability.circuit_breaker_collector import CircuitBreakerCollector
from paygrid_server.observability.event_relay_collector import EventRelayCollector
from paygrid_server.observability.payments_first_collector import PaymentsFirstCollector
from paygrid_server.observability.metrics import PaygridMetrics
from paygrid_server.observability.metrics_endpoint import MetricsEndpoint


class AppObservability:
    def __init__(self, config: ObservabilityConfig,
                 span_exporter: SpanExporter | None = None) -> None:
        self._config = config
        self.metrics = PaygridMetrics()
        self.tracer_provider: TracerProvider = tracing.build_tracer_provider(
            config.tracing_exporter, config.otlp_endpoint, span_exporter)
        # Spans cost ~0.1 ms per call and per channel call: made only when
        # they go somewhere. Without them, logs carry the request id only.
        self.tracing = config.tracing_exporter != "none" or span_exporter is not None
        self._batch_metrics = BatchMetrics(self.metrics)
        self._channel_tracing = (tracing.channel_tracing_interceptors(self.tracer_provider)
                                 if self.tracing else [])
        self.endpoint: MetricsEndpoint | None = None

    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """Outermost, when tracing is on: the span is current before the call
        interceptor binds log ids (request ids and metrics are done there)."""
        return [tracing.server_tracing_interceptor(self.tracer_provider)] if self.tracing else []

    def channel_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """Tracing's, when on (metrics are told by the channel: channel_call_observer)."""
        return list(self._channel_tracing)

    def channel_call_observer(self, channel: str) -> CallObserver:
        """Told of each call to `channel` (GrpcPaymentChannel's observe_call)."""
        return ChannelCallMetrics(self.metrics, channel).observe

    def watch_circuit_breakers(self, breakers: Mapping[str, CircuitBreaker]) -> None:
        self.metrics.registry.register(CircuitBreakerCollector(breakers))

    def watch_event_relay(self, stats: RelayStats) -> None:
        self.metrics.registry.register(EventRelayCollector(stats))

    def watch_payments_first(self, first: PaymentsFirst) -> None:
        self.metrics.registry.register(PaymentsFirstCollector(first))

    def observe_batch_event(self, event: BatchEvent) -> None:
        self._batch_metrics.observe(event)

    def start_metrics_endpoint(self) -> None:
        """Serves /metrics if configured ("" turns it off)."""
        if self._config.metrics_listen:
            self.endpoint = MetricsEndpoint.start(self._config.metrics_listen,
                                                  self.metrics.registry)

    @property
    def metrics_port(self) -> int | None:
        return None if self.endpoint is None else self.endpoint.port

    async def stop(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.stop()
            self.endpoint = None
        await tracing.shut_down(self.tracer_provider)
