"""The event relay's figures, read from its stats at scrape time: lag
(events in the log the broker has not confirmed), publishes and confirms,
and the state it is in (a replica that does not lead shows waiting_for_lead)."""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from paygrid_server.domain.events.event_relay import RelayState, RelayStats


class EventRelayCollector(Collector):
    def __init__(self, stats: RelayStats) -> None:
        self._stats = stats

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        lag, cursor, published, confirmed, failures, state = self._families()
        lag.add_metric([], stats.lag)
        cursor.add_metric([], stats.cursor)
        published.add_metric([], stats.published)
        confirmed.add_metric([], stats.confirmed)
        failures.add_metric([], stats.failures)
        for candidate in RelayState:
            state.add_metric([candidate.value], 1.0 if candidate is stats.state else 0.0)
        yield from (lag, cursor, published, confirmed, failures, state)

    @staticmethod
    def _families() -> tuple[Metric, ...]:
        return (
            GaugeMetricFamily("paygrid_event_relay_lag_events",
                              "Events in the log after the relay's cursor (last seq - cursor)."),
            GaugeMetricFamily("paygrid_event_relay_cursor",
                              "Seq up to which every event is confirmed by the broker."),
            CounterMetricFamily("paygrid_event_relay_published",
                                "Events this replica published (republished ones again)."),
            CounterMetricFamily("paygrid_event_relay_confirmed",
                                "Publishes the broker confirmed."),
            CounterMetricFamily("paygrid_event_relay_failures",
                                "Relay sessions ended by a nack, a return, a lost "
                                "connection or an unreachable broker."),
            GaugeMetricFamily("paygrid_event_relay_state",
                              "1 for the state the relay is in, 0 for the others.",
                              labels=("state",)),
        )
