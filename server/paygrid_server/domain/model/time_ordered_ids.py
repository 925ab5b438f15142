"""Time-ordered unique ids: UUID version 7 (RFC 9562), 48 bits of Unix time
in milliseconds, then random bits.

Why not uuid4 for ids that key a table: random ids land on random pages of
the table's indexes, so every new row dirtied pages of its own that the
commit then wrote to the WAL (and a checkpoint wrote again). Time-ordered
ids go to the indexes' right-hand end, where the rows of a commit share
pages. Building the value from random bits directly is also a few times
cheaper than uuid.uuid4() (no UUID object); the bits come from
random_bits.py (os.urandom, a page at a time). Still unique: the 74 random bits
(per millisecond) are what uniqueness relies on, as the 122 of uuid4 were.
The millisecond an id shows is no secret: the records it names carry their
own creation time.
"""

from __future__ import annotations

import time

from paygrid_server.domain.model.random_bits import random_int

_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0b10 << 62
_RAND_B_MASK = (1 << 62) - 1


def uuid7_hex() -> str:
    """32 lowercase hex digits, ordered by creation time (to the millisecond)."""
    rand = random_int(10)  # 80 bits: 12 for rand_a, 62 for rand_b
    value = ((time.time_ns() // 1_000_000) << 80 | _VERSION_7 | (rand >> 68) << 64
             | _VARIANT_RFC | rand & _RAND_B_MASK)
    return f"{value:032x}"
