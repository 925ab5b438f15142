"""Time sources, named by unit. Wall time for records, monotonic for budgets."""

from __future__ import annotations

import time


def now_us() -> int:
    """Wall-clock microseconds since the Unix epoch."""
    return time.time_ns() // 1_000


def monotonic_ms() -> float:
    return time.monotonic() * 1_000
