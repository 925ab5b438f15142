"""Random bits for ids, from os.urandom taken a page at a time.

Why not os.urandom per id: each call is a getrandom system call that
releases the GIL, and on a busy server another thread is always waiting for
it (the SQLite writer, grpc's poller). Every release then wakes that thread
(a futex wake, a context switch) and the caller waits to win the GIL back:
profiled, those wake-ups from os.urandom were a quarter of the event loop's
GIL hand-overs, at two to five ids a Pay. One call per POOL_BYTES keeps the
same source (the kernel's CSPRNG) at a fraction of the hand-overs.

Safe to share: each thread draws from a pool of its own (the event loop and
the writer both make ids), and a forked child starts with none, so no two
threads or processes ever hand out the same bytes.
"""

from __future__ import annotations

import os
import threading

POOL_BYTES = 4096


class _Pool(threading.local):
    data = b""
    used = 0


_pool = _Pool()


def _forget_pools() -> None:
    global _pool
    _pool = _Pool()  # the parent's bytes must never be handed out again here


os.register_at_fork(after_in_child=_forget_pools)


def random_int(n_bytes: int) -> int:
    """A uniformly random int of 8 * n_bytes bits (n_bytes <= POOL_BYTES)."""
    pool = _pool
    start = pool.used
    end = start + n_bytes
    if end > len(pool.data):
        pool.data = os.urandom(POOL_BYTES)
        start, end = 0, n_bytes
    pool.used = end
    return int.from_bytes(pool.data[start:end], "big")


_VERSION_4 = 0x4 << 76
_VARIANT_RFC = 0b10 << 62
_UUID4_RANDOM = ~((0xF << 76) | (0b11 << 62)) & ((1 << 128) - 1)


def uuid4_str() -> str:
    """A random UUID (version 4) in its dashed form, as str(uuid.uuid4())."""
    h = f"{random_int(16) & _UUID4_RANDOM | _VERSION_4 | _VARIANT_RFC:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
