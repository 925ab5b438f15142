"""nginx in front of a paygrid server, from deploy/nginx/grpc-admission.conf.in:
admission control ahead of the Python process (see that file for why). Used
by tests/reliability/test_overload.py and scripts/reliability_overload.py --front nginx."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from tests.support.local_process import free_loopback_port
from paygrid_server.transport.load_shedding import ConcurrencyLimit

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "nginx" / "grpc-admission.conf.in"
START_TIMEOUT_S = 10


def nginx_unavailable() -> str | None:
    if shutil.which("nginx") is None:
        return "no `nginx` on PATH (Debian: apt-get install nginx-light)"
    return None


def _paygrid_shed_status(max_calls: int) -> tuple[str, str]:
    """The message and base64 google.rpc.Status paygrid itself sends when it sheds a call."""
    status = ConcurrencyLimit("calls", max_calls).shed_status
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    return status.details, base64.b64encode(details).decode()


async def _wait_listening(port: int, process: subprocess.Popen) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while loop.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited ({process.returncode}) at start")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on {port} within {START_TIMEOUT_S} s")


@asynccontextmanager
async def nginx_front(upstream: str, max_calls: int) -> AsyncIterator[str]:
    """Yields the host:port clients call; paygrid at `upstream` gets at most
    `max_calls` PaymentService calls at once."""
    message, details = _paygrid_shed_status(max_calls)
    with tempfile.TemporaryDirectory() as prefix:
        port = free_loopback_port()
        config = Path(prefix) / "nginx.conf"
        config.write_text(TEMPLATE.read_text().format(
            prefix=prefix, listen=f"127.0.0.1:{port}", upstream=upstream, max_calls=max_calls,
            grpc_message=message, status_details=details))
        # Its own output goes nowhere: an nginx holding our stdout open would
        # keep a pipe reading this script open after it ends.
        process = subprocess.Popen(["nginx", "-p", prefix, "-c", str(config), "-g", "daemon off;"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            await _wait_listening(port, process)
            yield f"127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=START_TIMEOUT_S)
