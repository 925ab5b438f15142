"""A server's threads by what they are, for per-thread CPU figures.

Python 3.11 names no OS thread: /proc shows the writer, the log flusher,
the metrics endpoint, the default executor, aiosqlite's reader and gRPC's
poller all as "python". `py-spy dump` knows each Python thread's OS id and
its threading name; threads it does not list (gRPC's own C threads:
event_engine, grpc_global_tim) keep their /proc comm, which gRPC sets.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

# py-spy dump's thread line: `Thread 22292 (active): "paygrid-sqlite-writer"`
_THREAD_LINE = re.compile(r'^Thread (?:0x[0-9a-f]+ )?(\d+) \([^)]*\): "(.*)"', re.MULTILINE)
# Threading names made from a counter or a port, told apart by what runs them.
_SHORTER = ((re.compile(r"^paygrid-metrics-\d+$"), "metrics"),
            (re.compile(r"^asyncio_\d+$"), "default-executor"),
            (re.compile(r"_connection_worker_thread"), "aiosqlite-reader"),
            (re.compile(r"_poll_wrapper"), "grpc-poller"),
            (re.compile(r"^paygrid-sqlite-writer$"), "writer"),
            (re.compile(r"^paygrid-log-flush$"), "log-flush"))


def python_thread_names(pid: int) -> dict[int, str]:
    """{OS thread id: short name} of the process's Python threads; empty if
    py-spy cannot look (then every figure stays under its comm)."""
    py_spy = Path(sys.executable).parent / "py-spy"
    try:
        dump = subprocess.run([str(py_spy), "dump", "--pid", str(pid)], capture_output=True,
                              text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {int(tid): _short(name) for tid, name in _THREAD_LINE.findall(dump)}


def _short(name: str) -> str:
    for pattern, short in _SHORTER:
        if pattern.search(name):
            return short
    return name
