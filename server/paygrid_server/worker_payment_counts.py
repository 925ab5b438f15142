"""How many callers wait for a payment in each worker of one supervisor
(`serve --workers N`), in memory the workers share: the SiblingPayments
port (domain/ports/sibling_payments.py) for domain/payments_first.py.

Why across workers: they share the machine's cores and, on SQLite, take
turns writing one file, so another worker's batch holds up this worker's
payments just as its own batch does (docs/performance.md, session 20: two
SQLite workers, Pays at 200/s during a batch, p50 29-36 ms with the gate
within each process alone, 14-22 ms with it across the workers).

One 8-byte slot per worker (by its index), in a memfd the supervisor makes
and hands each worker by descriptor, as it hands the SQLite lock's. A slot
is written by its worker only; the supervisor zeroes it when the worker
dies and a worker zeroes it again at its start, so a dead worker's
payments hold nothing back. Advisory: nothing is stored from it, and a
stale read makes a batch step wait (at most the yield) or not, no more.
Aligned 8-byte stores and loads are not torn on the machines we run on.
"""

from __future__ import annotations

import mmap
import os

COUNTS_FD_ENV = "PAYGRID_PAYMENT_COUNTS_FD"  # the memfd, in each worker
WORKER_INDEX_ENV = "PAYGRID_WORKER_INDEX"  # the worker's slot
_SLOT_BYTES = 8


class WorkerPaymentCounts:
    """The supervisor's handle: one slot per worker."""

    def __init__(self, workers: int) -> None:
        assert workers >= 1, workers
        self.fd = os.memfd_create("paygrid-payment-counts")
        os.ftruncate(self.fd, workers * _SLOT_BYTES)  # zero-filled
        self._map = mmap.mmap(self.fd, workers * _SLOT_BYTES)
        self._slots = memoryview(self._map).cast("q")

    def worker_env(self, index: int) -> dict[str, str]:
        assert 0 <= index < len(self._slots), index
        return {COUNTS_FD_ENV: str(self.fd), WORKER_INDEX_ENV: str(index)}

    def clear(self, index: int) -> None:
        """Worker `index` died: its callers wait for nothing any more."""
        self._slots[index] = 0

    def close(self) -> None:
        self._slots.release()
        self._map.close()
        os.close(self.fd)


class SiblingPaymentCounts:
    """A worker's view (SiblingPayments): its own slot written, the others' summed."""

    def __init__(self, fd: int, index: int) -> None:
        size = os.fstat(fd).st_size
        assert size % _SLOT_BYTES == 0 and 0 <= index < size // _SLOT_BYTES, (size, index)
        self._map = mmap.mmap(fd, size)  # keeps its own descriptor
        self._slots = memoryview(self._map).cast("q")
        self._index = index
        self._slots[index] = 0  # a predecessor's count, if the supervisor had no time to

    def publish(self, running: int) -> None:
        self._slots[self._index] = running

    def running(self) -> int:
        slots = self._slots
        return sum(slots) - slots[self._index]


def sibling_payment_counts() -> SiblingPaymentCounts | None:
    """In a worker: its view of the supervisor's counts (None alone)."""
    fd = os.environ.pop(COUNTS_FD_ENV, None)
    index = os.environ.pop(WORKER_INDEX_ENV, None)
    if fd is None or index is None:
        return None
    counts = SiblingPaymentCounts(int(fd), int(index))
    os.close(int(fd))
    return counts
