"""Running paygrid as a local OS process, for tests and benchmark scripts:
pick a free loopback port, wait until the server's health says SERVING."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import subprocess
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


# Why not the kernel's pick (bind to port 0): it comes from the ephemeral
# range, the one every outgoing connection takes its source port from. Between
# the pick and the server's own bind, any connection could take the port, the
# test's own health checks among them: they connect to the port before the
# server listens, and a loopback connect whose source port is the port it
# dials connects to itself (TCP simultaneous open). Seen in CI: a server
# exiting "cannot listen on 127.0.0.1:40907". Below the ephemeral range no
# connection is given a port unasked.
LOWEST_PORT = 10_000


def _ephemeral_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _ports_below_ephemeral() -> range:
    return range(LOWEST_PORT, max(LOWEST_PORT, _ephemeral_ports_start()))


_PORTS = _ports_below_ephemeral()
# From a random place (another process picking at once starts elsewhere), and
# never the same port twice in a process: a port handed out may not be bound
# yet when the next is asked for.
_turns = itertools.count(random.randrange(len(_PORTS))) if _PORTS else None


def free_loopback_port() -> int:
    """A loopback port free now and outside the ephemeral range, where
    possible; else the kernel's pick."""
    if _turns is not None:
        for _ in range(len(_PORTS)):
            port = _PORTS[next(_turns) % len(_PORTS)]
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue  # bound (or lingering) here: the next one
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_until_serving(port: int, process: subprocess.Popen, timeout_s: float = 30) -> None:
    """Returns once grpc.health.v1 answers SERVING; fails if the process exits."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with code {process.returncode}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on port {port} not SERVING after {timeout_s} s")
            await asyncio.sleep(0.1)
