"""Event ids are UUIDv7: time-ordered (so the UNIQUE index on event_id grows
at its end), still UUIDs, still unique."""

from __future__ import annotations

import uuid

import pytest

from paygrid_server.domain.model import time_ordered_ids as event_ids  # the clock they read
from paygrid_server.storage.event_ids import new_event_id


def test_an_event_id_is_a_version_7_rfc_uuid_carrying_the_millisecond() -> None:
    before_ms = event_ids.time.time_ns() // 1_000_000
    parsed = uuid.UUID(new_event_id())
    after_ms = event_ids.time.time_ns() // 1_000_000
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before_ms <= parsed.int >> 80 <= after_ms


def test_ids_of_a_later_millisecond_sort_after_those_of_an_earlier_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The clock is set, not waited for: every id of ms 1 must sort before every id of ms 2.
    now_ns = [1_700_000_000_001 * 1_000_000]
    monkeypatch.setattr(event_ids.time, "time_ns", lambda: now_ns[0])
    earlier = [new_event_id() for _ in range(200)]
    now_ns[0] += 1_000_000 - 1  # still the same millisecond: no ordering promised
    same_ms = [new_event_id() for _ in range(200)]
    now_ns[0] += 1
    later = [new_event_id() for _ in range(200)]
    assert max(earlier + same_ms) < min(later)
    assert {uuid.UUID(i).int >> 80 for i in earlier + same_ms} == {1_700_000_000_001}


def test_ids_are_unique_within_one_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_ids.time, "time_ns", lambda: 1_700_000_000_000 * 1_000_000)
    ids = [new_event_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
