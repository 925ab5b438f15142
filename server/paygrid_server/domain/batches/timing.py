"""Batch timing figures as the payments literature defines them.

APT (average processing time) is the mean of the groups' processing times,
each from the start of its charging to the commit of its results.
Throughput is measured: items made final per second of wall time.
Model throughput is the source's formula T = N / M, with N the items made
final and M the APT: what the batch would do if its items took one APT.
Both are reported, so a user can hold our figures against the source's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchTiming:
    wall_us: int
    apt_us: int
    throughput_items_per_s: float  # measured over wall time
    groups: int
    model_throughput_items_per_s: float = 0.0  # T = N / M (M = APT); 0 with no group


def batch_timing(group_processing_us: list[int], items_final: int, wall_us: int) -> BatchTiming:
    assert wall_us >= 0 and items_final >= 0
    apt_us = sum(group_processing_us) // len(group_processing_us) if group_processing_us else 0
    throughput = items_final / (wall_us / 1_000_000) if wall_us > 0 else 0.0
    model = items_final / (apt_us / 1_000_000) if apt_us > 0 else 0.0
    return BatchTiming(wall_us, apt_us, throughput, len(group_processing_us), model)
