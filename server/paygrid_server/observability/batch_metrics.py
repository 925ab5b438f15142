"""Batch figures from the events a submission streams to its submitter:
items made final (by status), and each finished submission's APT and
throughput, as its summary states them.

Events a submission emits after its submitter has gone are dropped before
they reach the transport, so they are not counted here either.
"""

from __future__ import annotations

from typing import Iterable

from paygrid_server.domain.batches.events import (
    BatchEvent,
    BatchSummary,
    GroupCompleted,
    ItemsRejected,
)
from paygrid_server.domain.model.batch import BatchItem, ItemResult, final_counts
from paygrid_server.observability.metrics import PaygridMetrics


class BatchMetrics:
    def __init__(self, metrics: PaygridMetrics) -> None:
        self._metrics = metrics
        self._items_by_status: dict[str, object] = {}

    def observe(self, event: BatchEvent) -> None:
        if isinstance(event, GroupCompleted):
            self._count_items(event.group.items)
        elif isinstance(event, ItemsRejected):
            self._count_items(event.items)
        elif isinstance(event, BatchSummary):
            self._observe_summary(event)
        # ItemsAlreadyProcessed: made final by an earlier submission, counted then.

    def _count_items(self, items: Iterable[BatchItem | ItemResult]) -> None:
        """One inc per status, not per item (each takes the counter's lock)."""
        for status, count in final_counts(items).items():
            counter = self._items_by_status.get(status.value)
            if counter is None:
                counter = self._items_by_status[status.value] = \
                    self._metrics.batch_items.labels(status.value)
            counter.inc(count)

    def _observe_summary(self, summary: BatchSummary) -> None:
        metrics = self._metrics
        metrics.batch_submissions.labels(summary.status.value).inc()
        timing = summary.timing
        if timing.groups:  # a submission with no group (all rejected) has no APT
            apt_s = timing.apt_us / 1_000_000
            metrics.batch_apt_seconds.observe(apt_s)
            metrics.batch_last_apt_seconds.set(apt_s)
        metrics.batch_throughput.observe(timing.throughput_items_per_s)
        metrics.batch_last_throughput.set(timing.throughput_items_per_s)
