"""Event ids: UUID version 7 in its dashed form (domain/model/time_ordered_ids.py
says why time-ordered: events.event_id is UNIQUE, and time-ordered ids go to
that index's end, where the events of a commit share a page)."""

from __future__ import annotations

from paygrid_server.domain.model.time_ordered_ids import uuid7_hex


def new_event_id() -> str:
    h = uuid7_hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
