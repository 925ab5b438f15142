"""Ids draw their random bits from a pool of os.urandom (random_bits.py):
the pool must never hand the same bytes out twice, not even to a forked
child (serve --workers, a test harness), and what it builds must still be
the UUIDs it claims to be."""

from __future__ import annotations

import os
import threading
import uuid

from paygrid_server.domain.model.random_bits import POOL_BYTES, random_int, uuid4_str
from paygrid_server.domain.model.time_ordered_ids import uuid7_hex


def test_a_forked_child_never_draws_the_bytes_its_parent_draws_next() -> None:
    random_int(8)  # the pool is filled, with more bytes left in it
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write_end, f"{random_int(16):032x}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    parents = f"{random_int(16):032x}"
    childs = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(child, 0)
    assert len(childs) == 32
    assert childs != parents


def test_draws_past_the_end_of_a_pool_are_new_bytes() -> None:
    drawn = [random_int(10) for _ in range(3 * POOL_BYTES // 10)]
    assert len(set(drawn)) == len(drawn)


def test_threads_draw_distinct_ids() -> None:
    by_thread: list[list[str]] = [[], []]

    def draw(into: list[str]) -> None:
        into.extend(uuid7_hex() for _ in range(20_000))

    threads = [threading.Thread(target=draw, args=(ids,)) for ids in by_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = by_thread[0] + by_thread[1]
    assert len(set(every)) == len(every)


def test_uuid4_str_is_a_version_4_uuid_in_its_dashed_form() -> None:
    for _ in range(1_000):
        text = uuid4_str()
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_uuid7_hex_is_still_a_version_7_uuid() -> None:
    parsed = uuid.UUID(uuid7_hex())
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
