"""A paygrid server (and, if asked, channel simulators) as their own
processes on loopback ports with a throw-away SQLite file, for benchmarks:
the load generator never shares a GIL or an event loop with the server,
and the RSS read is the server's alone."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

from paygrid_server.api_keys import DEV_API_KEY
from paygrid_server.startup_failure import EXIT_CODE as START_ERROR_EXIT_CODE  # a port taken, among others
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/support/: helpers shared with the tests
from tests.support.local_process import free_loopback_port, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
AUTH_METADATA = (("authorization", f"Bearer {DEV_API_KEY}"),)
STOP_TIMEOUT_S = 30
PORT_ATTEMPTS = 3
WORKERS_START_TIMEOUT_S = 60



def events_stored(server: "RunningServer") -> int:
    with sqlite3.connect(server.database) as db:
        return db.execute("SELECT count(*) FROM events").fetchone()[0]


def stat_cpu_s(stat: str) -> float:
    """User + system CPU seconds from a /proc/<pid>[/task/<tid>]/stat text
    (fields counted after the comm, which may hold spaces)."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stat_comm(stat: str) -> str:
    """The thread's or process's name from a /proc stat text."""
    return stat[stat.index("(") + 1:stat.rindex(")")]


def cpu_s(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    return stat_cpu_s(Path(f"/proc/{pid}/stat").read_text())


def thread_cpu_s(pid: int) -> dict[int, tuple[str, float]]:
    """{OS thread id: (name, user + system CPU seconds so far)}: "loop" for
    the main thread (the event loop's), else the thread's comm (Python
    threads are all "python": thread_names.py tells them apart)."""
    found: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:
            continue  # ended meanwhile
        name = "loop" if task.name == str(pid) else stat_comm(stat)
        found[int(task.name)] = (name, stat_cpu_s(stat))
    return found


def thread_cpu_since(start: dict[int, tuple[str, float]], end: dict[int, tuple[str, float]],
                     names: dict[int, str]) -> dict[str, float]:
    """CPU seconds each thread used between two thread_cpu_s readings,
    summed by name (`names` first, then the reading's own)."""
    used: dict[str, float] = {}
    for tid, (name, cpu) in end.items():
        name = "loop" if name == "loop" else names.get(tid, name)
        used[name] = used.get(name, 0.0) + cpu - start.get(tid, (name, 0.0))[1]
    return used


def process_tree(pid: int) -> list[int]:
    """`pid` and every process under it (a supervisor's workers)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue  # gone meanwhile
    tree, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sorted(tree)


def per_process(measure: Callable[[int], float], pids: list[int]) -> dict[int, float]:
    """measure(pid) (cpu_s, rss_kib) of each of `pids` still there, by pid:
    a process that exited meanwhile is left out."""
    found = {}
    for pid in pids:
        try:
            found[pid] = measure(pid)
        except OSError:
            continue
    return found


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))


@dataclass(frozen=True)
class RunningServer:
    port: int
    pid: int
    database: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def listeners(port: int) -> int:
    """Sockets listening on `port`, any local address (/proc/net/tcp and
    tcp6, state 0A)."""
    found = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)  # the header
            for row in rows:
                fields = row.split()
                local, state = fields[1], fields[3]
                found += state == "0A" and int(local.rsplit(":", 1)[1], 16) == port
    return found


async def _every_worker_listening(port: int, workers: int, server: subprocess.Popen) -> None:
    """`serve --workers N` answers health as soon as its first worker serves,
    and starts the next ones after it: load started then lands on the first
    worker alone (the kernel spreads connections over the sockets listening
    when they are made). Wait for all N listening sockets."""
    deadline = time.monotonic() + WORKERS_START_TIMEOUT_S
    while listeners(port) < workers:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with code {server.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{listeners(port)} of {workers} workers listening on {port}")
        await asyncio.sleep(0.05)


async def _start_server(folder: Path, database: str, channel: str, env: dict[str, str],
                        workers: int) -> tuple[int, subprocess.Popen]:
    """Serving on a free port. Other work on the machine may take the port
    between free_loopback_port and the server's bind (the server exits with
    code 2): then another port. Its stderr stays unread (the log lines would
    cost the server writes the measurements should not include)."""
    for attempt in range(PORT_ATTEMPTS):
        port = free_loopback_port()
        config = folder / "bench.toml"
        config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
database = "{database}"
[[channels]]
name = "card"
{channel}
""")
        # --workers only when asked: older commits (bench_baseline_tree) lack it.
        more = ["--workers", str(workers)] if workers != 1 else []
        server = subprocess.Popen(
            [sys.executable, "-m", "paygrid_server", "serve", "--config", str(config), *more],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            await wait_until_serving(port, server)
            await _every_worker_listening(port, workers, server)
            return port, server
        except TimeoutError:  # not serving, or not every worker: not left running
            server.terminate()
            server.wait(timeout=STOP_TIMEOUT_S)
            raise
        except RuntimeError:  # it exited
            if server.returncode != START_ERROR_EXIT_CODE or attempt == PORT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


@asynccontextmanager
async def paygrid_server(in_process_channel_latency_ms: float | None = None,
                         channel_called_directly: bool = False,
                         simulator_process: bool = False,
                         extra_env: dict[str, str] | None = None,
                         postgres_dsn: str | None = None,
                         workers: int = 1) -> AsyncIterator[RunningServer]:
    """One channel "card": an in-process simulator with the given latency
    (over loopback gRPC, or called directly), or (simulator_process) a
    simulator in a process of its own. On `postgres_dsn` instead of a
    throw-away SQLite file, with `workers` server processes (the pid is
    then their supervisor's)."""
    assert (in_process_channel_latency_ms is None) == simulator_process
    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "bench.sqlite3"
        env = {**os.environ, "PAYGRID_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
               "PAYGRID_METRICS_LISTEN": "127.0.0.1:0", **(extra_env or {})}
        processes: list[subprocess.Popen] = []
        if simulator_process:
            sim_port = free_loopback_port()
            channel = f'target = "127.0.0.1:{sim_port}"'
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "paygrid_server.simulator", "--listen",
                 f"127.0.0.1:{sim_port}"], cwd=ROOT, stdout=subprocess.DEVNULL, env=env))
        else:
            direct = "true" if channel_called_directly else "false"
            channel = (f"simulator = {{ latency_ms = {in_process_channel_latency_ms}, "
                       f"in_process = {direct} }}")
        try:
            port, server = await _start_server(Path(folder), postgres_dsn or str(database),
                                               channel, env, workers)
            processes.insert(0, server)
            yield RunningServer(port, server.pid, database)
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=STOP_TIMEOUT_S)
