"""paygrid-server as its own OS process, for tests that kill it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.local_process import free_loopback_port, wait_until_serving

ROOT = Path(__file__).resolve().parents[2]


def write_config(path: Path, port: int, database: Path, channels: dict[str, int],
                 **server: int) -> Path:
    """A TOML config with one remote channel per (name, simulator port) and
    any other [server] keys."""
    extra = "".join(f"{key} = {value}\n" for key, value in server.items())
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
{extra}{tables}""")
    return path


free_port = free_loopback_port


class ServerProcess:
    """paygrid-server as its own OS process, as deployed."""

    def __init__(self, config: Path, log: Path, args: tuple[str, ...] = ()) -> None:
        self.config = config
        self.log = log
        self.args = args  # more `serve` flags (e.g. --workers 2)
        self.process: subprocess.Popen | None = None

    async def start(self, port: int, env: dict[str, str] | None = None) -> None:
        self.spawn(env)
        try:
            await wait_until_serving(port, self.process)
        except RuntimeError as error:
            raise AssertionError(f"{error}:\n{self.log.read_text()}") from error

    def spawn(self, env: dict[str, str] | None = None) -> None:
        """Starts the process without waiting for it to serve."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "paygrid_server", "serve", "--config", str(self.config),
             *self.args],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log.open("a"),
            # Metrics on a free port, so servers never collide on the default one.
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PAYGRID_METRICS_LISTEN": "127.0.0.1:0",
                 **(env or {})})

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


async def wait_for(condition, what: str, timeout_s: float = 60) -> None:
    """Until `condition()` holds: only for an outcome the test has made
    certain (a stored result, a log line, a state a held channel keeps),
    never for a moment that may pass unseen, nor to prove an absence. The
    timeout only ends a test that went wrong, so it is generous: the
    machine is shared."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


