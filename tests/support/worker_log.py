"""What `serve --workers N` says in its log (one stderr for the supervisor
and its workers, JSON lines): which workers run, which one served what."""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc

from tests.support.api_key_metadata import keyed_channel
from tests.support.server_process import wait_for


def log_events(log: Path, event: str) -> list[dict]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            parsed = json.loads(line)
        except ValueError:
            continue  # a line cut by a worker killed mid-write
        if parsed.get("event") == event:
            found.append(parsed)
    return found


async def start_of(log: Path, pid: int) -> dict:
    """Worker `pid`'s server.started line (what its start took up, its
    metrics port). Waited for: a worker's lines reach the log through its
    own buffer, flushed on a timer (logging_setup.py), so the line may come
    after the supervisor's workers.worker_ready for the same worker."""
    def lines() -> list[dict]:
        return [e for e in log_events(log, "server.started") if e.get("worker_pid") == pid]
    await wait_for(lambda: lines(), f"worker {pid}'s start")
    return lines()[0]


def ready_workers(log: Path) -> list[int]:
    """Pids of the workers that said they serve, in that order."""
    return [e["pid"] for e in log_events(log, "workers.worker_ready")]


def served_by(log: Path, idempotency_key: str) -> int | None:
    """The worker pid that completed the payment of `idempotency_key`."""
    done = [e["worker_pid"] for e in log_events(log, "payment.completed")
            if e.get("idempotency_key") == idempotency_key]
    return done[0] if done else None


def own_connection(target: str, options: list[tuple[str, object]] = ()) -> grpc.aio.Channel:
    """A channel with a connection of its own (grpc shares a connection
    between a process's channels to one target otherwise), so the kernel
    picks a worker for it anew."""
    return keyed_channel(target, options=[*options, ("grpc.use_local_subchannel_pool", 1)])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
