"""Batch timing figures as the payments literature defines them.

APT (average processing time) is the mean of the groups' processing times,
each from the start of its charging to the commit of its results.
Throughput is items made final per second of wall time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchTiming:
    wall_us: int
    apt_us: int
    throughput_items_per_s: float
    groups: int


def batch_timing(group_processing_us: list[int], items_final: int, wall_us: int) -> BatchTiming:
    assert wall_us >= 0 and items_final >= 0
    apt_us = sum(group_processing_us) // len(group_processing_us) if group_processing_us else 0
    throughput = items_final / (wall_us / 1_000_000) if wall_us > 0 else 0.0
    return BatchTiming(wall_us, apt_us, throughput, len(group_processing_us))
