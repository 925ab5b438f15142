"""How much this process's payments held its batches back
(domain/payments_first.py), read at scrape time: the batch steps that
waited for payments, and the seconds they waited."""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from paygrid_server.domain.payments_first import PaymentsFirst


class PaymentsFirstCollector(Collector):
    def __init__(self, first: PaymentsFirst) -> None:
        self._first = first

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        steps, seconds = self._families()
        steps.add_metric([], self._first.batch_steps_yielded)
        seconds.add_metric([], self._first.batch_yielded_s)
        yield from (steps, seconds)

    @staticmethod
    def _families() -> tuple[Metric, ...]:
        return (
            CounterMetricFamily("paygrid_batch_steps_yielded_to_payments",
                                "Batch steps (a message's items stored, a group started) that "
                                "waited while callers waited for payments."),
            CounterMetricFamily("paygrid_batch_yielded_to_payments_seconds",
                                "Time batch steps waited for payments, all together."),
        )
