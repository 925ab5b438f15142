"""Payments running in this server's sibling processes (the other workers
of `serve --workers N`), for domain/payments_first.py: a batch step in one
worker gives way to payments another worker runs. worker_payment_counts.py
implements it in memory the workers share."""

from __future__ import annotations

from typing import Protocol


class SiblingPayments(Protocol):
    def publish(self, running: int) -> None:
        """This process's callers waiting for a payment now, for the siblings to see."""
        ...

    def running(self) -> int:
        """Callers waiting for a payment in the siblings now (this process's
        own not counted). Advisory: read without a lock, possibly a moment old."""
        ...
