"""The benchmarks' helpers for `serve --workers N`: load starts only once all
N workers listen (scripts/bench_server.py; its health answers SERVING as
soon as the first worker serves, and connections made before the others
listen all land on the first one), and scripts/bench_workers.py tells how
the kernel spread the load over the workers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import bench_load  # noqa: E402
import bench_server  # noqa: E402
import bench_workers  # noqa: E402


class _Running:
    """A server process that has not exited (Popen.poll)."""

    returncode = None

    def poll(self) -> None:
        return None


def _reuse_port_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def test_listeners_counts_listening_sockets_only() -> None:
    # As `serve --workers N` holds its port: bound, never listening.
    held = _reuse_port_socket()
    port = held.getsockname()[1]
    first = second = None
    try:
        assert bench_server.listeners(port) == 0
        first = _reuse_port_socket(port)
        first.listen()
        assert bench_server.listeners(port) == 1
        second = _reuse_port_socket(port)
        second.listen()
        assert bench_server.listeners(port) == 2
    finally:
        for sock in (held, first, second):
            if sock is not None:
                sock.close()


async def test_waits_for_every_worker_to_listen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_server, "WORKERS_START_TIMEOUT_S", 0.3)
    first = _reuse_port_socket()
    first.listen()
    port = first.getsockname()[1]
    second = None
    try:
        # One of two listening: it does not return, whatever the wait.
        with pytest.raises(TimeoutError, match="1 of 2 workers listening"):
            await bench_server._every_worker_listening(port, 2, _Running())
        second = _reuse_port_socket(port)
        second.listen()
        await bench_server._every_worker_listening(port, 2, _Running())
        await bench_server._every_worker_listening(port, 1, _Running())  # a lone server
    finally:
        first.close()
        if second is not None:
            second.close()


def test_worker_shares_are_each_workers_part_of_the_cpu_largest_first() -> None:
    # The supervisor (9) is not a worker; worker 2 used 1 s, worker 1 3 s
    # between the readings.
    assert bench_workers.worker_shares({9: 5.0, 1: 1.0, 2: 2.0}, {9: 6.0, 1: 4.0, 2: 3.0},
                                       9) == [0.75, 0.25]
    assert bench_workers.worker_shares({9: 1.0}, {9: 2.0}, 9) == []  # a lone server


def test_rounds_measure_one_and_two_workers_in_turn() -> None:
    assert [bench_load.in_turn(n, 1, 2) for n in range(4)] == [(1, 2), (2, 1), (1, 2), (2, 1)]


def _pay_peak(engine: str, round_no: int, workers: int, qps: float,
              machine_us: int = 1000) -> dict:
    # One level, at `qps` Pays/s, the machine busy `machine_us` a Pay.
    return {"engine": engine, "round": round_no, "workers": workers, "pay_peak_qps": qps,
            "pay_qps_by_concurrency": {128: qps},
            "machine_cpu_us_per_pay_by_concurrency": {128: machine_us}}


def test_the_ratio_is_the_median_of_each_rounds_own_ratio() -> None:
    results = [_pay_peak("sqlite", 0, 1, 1000.0), _pay_peak("sqlite", 0, 2, 1500.0),
               _pay_peak("postgresql", 0, 1, 400.0), _pay_peak("postgresql", 0, 2, 800.0),
               # round 1 on a machine twice as fast: its ratio counts, not its peaks
               _pay_peak("sqlite", 1, 2, 2400.0), _pay_peak("sqlite", 1, 1, 2000.0),
               _pay_peak("sqlite", 2, 1, 1000.0), _pay_peak("sqlite", 2, 2, 1300.0)]
    median, ratios, _, _ = bench_workers.ratio_by_rounds(results, "sqlite", 2)
    assert (median, ratios) == (1.3, [1.5, 1.2, 1.3])
    median, ratios, _, _ = bench_workers.ratio_by_rounds(results, "postgresql", 2)
    assert (median, ratios) == (2.0, [2.0])


def test_the_bound_is_every_core_busy_at_two_workers_cpu_per_pay() -> None:
    one = _pay_peak("sqlite", 0, 1, 1000.0)
    # 2 cores at 1,250 µs a Pay: 1,600 Pays/s at most, 1.6x one worker's peak
    two = _pay_peak("sqlite", 0, 2, 1300.0, machine_us=1250)
    assert bench_workers.all_cores_bound(one, two, 2) == 1.6
    # the level that gave the peak is the one read
    two["pay_qps_by_concurrency"] = {32: 900.0, 128: 1300.0}
    two["machine_cpu_us_per_pay_by_concurrency"] = {32: 800, 128: 1250}
    assert bench_workers.all_cores_bound(one, two, 2) == 1.6
    assert bench_workers.ratio_by_rounds([one, two], "sqlite", 2) == (1.3, [1.3], 1.6, [1.6])


_PARENT_OF_ONE = (  # starts a child of its own, tells its pid, ends both when stdin closes
    "import subprocess, sys\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'],\n"
    "                         stdin=subprocess.PIPE)\n"
    "print(child.pid, flush=True)\n"
    "sys.stdin.read()\n"
    "child.communicate(b'')\n")


def test_a_servers_tree_is_the_process_and_every_process_under_it() -> None:
    child = subprocess.Popen([sys.executable, "-c", _PARENT_OF_ONE], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(child.stdout.readline())
        tree = bench_server.process_tree(os.getpid())
        assert {os.getpid(), child.pid, grandchild} <= set(tree)
        assert os.getppid() not in tree  # above it, not under it
        assert tree == sorted(tree)
        assert {child.pid, grandchild} <= set(bench_workers.tree_cpu_s(os.getpid()))
        assert bench_server.process_tree(grandchild) == [grandchild]
    finally:
        child.communicate("")
