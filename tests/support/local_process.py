"""Running paygrid as a local OS process, for tests and benchmark scripts:
pick a free loopback port, wait until the server's health says SERVING."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def free_loopback_port() -> int:
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
