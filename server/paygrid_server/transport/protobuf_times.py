"""Microseconds into protobuf's Timestamp and Duration, in place.

Timestamp.FromMicroseconds and Duration.FromMicroseconds are Python code in
protobuf; two field assignments are a fraction of their cost, and the
messages that carry times are built on every Pay (payment_pb, three times a
Pay) and every simulated Charge (simulator/charge_messages.py)."""

from __future__ import annotations

from google.protobuf import duration_pb2, timestamp_pb2


def set_time(stamp: timestamp_pb2.Timestamp, at_us: int) -> None:
    stamp.seconds, rest_us = divmod(at_us, 1_000_000)
    stamp.nanos = rest_us * 1_000


def set_duration(duration: duration_pb2.Duration, us: int) -> None:
    seconds, rest_us = divmod(us, 1_000_000)
    if seconds < 0 and rest_us:  # a Duration's nanos take the sign of its seconds
        seconds, rest_us = seconds + 1, rest_us - 1_000_000
    duration.seconds, duration.nanos = seconds, rest_us * 1_000
