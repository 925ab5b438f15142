"""Circuit breaker state per channel, read from the breakers at scrape time.

A breaker moves from OPEN to HALF_OPEN by the clock alone, with no call to
record it, so its state is read when scraped rather than pushed on change.
"""

from __future__ import annotations

from typing import Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from paygrid_server.domain.charging.circuit_breaker import BreakerState, CircuitBreaker


class CircuitBreakerCollector(Collector):
    def __init__(self, breakers: Mapping[str, CircuitBreaker]) -> None:
        self._breakers = breakers

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state, failures = self._families()
        for channel, breaker in self._breakers.items():
            current = breaker.state
            for candidate in BreakerState:
                state.add_metric([channel, candidate.value], 1.0 if candidate is current else 0.0)
            failures.add_metric([channel], breaker.consecutive_failures)
        yield state
        yield failures

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "paygrid_circuit_breaker_state",
                "1 for the state a channel's circuit breaker is in, 0 for the others.",
                labels=("channel", "state")),
            GaugeMetricFamily("paygrid_circuit_breaker_consecutive_failures",
                              "Failed calls to the channel since its last success.",
                              labels=("channel",)),
        )
