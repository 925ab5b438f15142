"""paygrid-server as its own OS process, for tests that kill it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent


def write_config(path: Path, port: int, database: Path, channels: dict[str, int]) -> Path:
    """A TOML config with one remote channel per (name, simulator port)."""
    tables = "".join(f"""
[[channels]]
name = "{name}"
target = "127.0.0.1:{sim_port}"
timeout_ms = 60000
""" for name, sim_port in channels.items())
    path.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
database = "{database}"
{tables}""")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """paygrid-server as its own OS process, as deployed."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.process: subprocess.Popen | None = None

    async def start(self, port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "paygrid_server", "serve", "--config", str(self.config)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log.open("a"),
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 30
            while True:
                assert self.process.poll() is None, self.log.read_text()
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                assert time.monotonic() < deadline, "server did not become SERVING"
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


async def wait_for(condition, what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


