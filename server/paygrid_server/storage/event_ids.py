"""Event ids: UUID version 7 (RFC 9562), 48 bits of Unix time in
milliseconds, then random bits.

Why not uuid4: events.event_id is UNIQUE, and random ids land on random
pages of that index, so every event dirtied a page of its own that the
commit then wrote to the WAL. Time-ordered ids go to the index's end, where
the events of a commit share a page. Building the string from os.urandom
directly is also a few times cheaper than uuid.uuid4() (no UUID object).
Still a UUID and still unique: the 74 random bits (per millisecond) are
what de-duplication relies on, as the 122 of uuid4 were.
"""

from __future__ import annotations

import os
import time

_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0b10 << 62
_RAND_B_MASK = (1 << 62) - 1


def new_event_id() -> str:
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits: 12 for rand_a, 62 for rand_b
    value = ((time.time_ns() // 1_000_000) << 80 | _VERSION_7 | (rand >> 68) << 64
             | _VARIANT_RFC | rand & _RAND_B_MASK)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
