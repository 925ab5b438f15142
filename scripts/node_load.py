"""Runs scripts/open_loop_load.js (Node.js: gRPC on Node's http2, or
@grpc/grpc-js) from Python: writes the request bodies and the run
description, starts node, reads back one (started_s, status code,
latency_ms) per call. The Node load generator
exists because Python's grpc.aio client spends about as much CPU per call
as the server does: on 2 shared cores, driving the server at twice its peak
from Python starves the server of the CPU the load generator burns."""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple

import grpc

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "open_loop_load.js"
GRPC_JS = ROOT / "clients" / "node" / "node_modules" / "@grpc" / "grpc-js"
CODES = {code.value[0]: code for code in grpc.StatusCode}

Call = tuple[float, grpc.StatusCode, float]


class NodeRun(NamedTuple):
    calls: list[Call]  # every call made
    not_sent: int  # calls due while max_in_flight were in flight
    generator_cpu_s: float  # the node process's own user + system CPU


def node_load_unavailable() -> str | None:
    """Why the Node load generator cannot run here, or None."""
    if shutil.which("node") is None:
        return "no `node` on PATH"
    if not GRPC_JS.is_dir():
        return "clients/node has no node_modules: run `npm ci` in clients/node"
    return None


async def node_unary_load(target: str, method: str, make_request: Callable[[int], bytes],
                          calls_at_most: int, metadata: tuple[tuple[str, str], ...],
                          timeout_s: float, *, closed_loop: tuple[int, float] | None = None,
                          phases: list[tuple[float, float]] | None = None,
                          max_in_flight: int = 4_096,
                          niceness: int = 0, connections: int = 1,
                          transport: str = "http2") -> NodeRun:
    """closed_loop=(concurrency, seconds), or phases=[(rate_per_s, seconds)];
    calls spread over `connections` connections; `transport` "grpc-js" or
    "http2" (open_loop_load.js says what each is)."""
    assert (closed_loop is None) != (phases is None)
    with tempfile.TemporaryDirectory() as folder:
        bodies, output, spec = (Path(folder) / name for name in ("bodies", "calls", "run.json"))
        with bodies.open("wb") as out:
            for n in range(1, calls_at_most + 1):
                body = make_request(n)
                out.write(struct.pack(">I", len(body)) + body)
        spec.write_text(json.dumps({
            "target": target, "method": method, "bodies": str(bodies), "output": str(output),
            "metadata": [list(pair) for pair in metadata], "timeout_ms": timeout_s * 1_000,
            "max_in_flight": max_in_flight, "connections": connections, "transport": transport,
            "closed_loop": closed_loop and {"concurrency": closed_loop[0],
                                            "seconds": closed_loop[1]},
            "phases": phases and [{"rate": rate, "seconds": seconds} for rate, seconds in phases],
        }))
        node = await asyncio.create_subprocess_exec(
            "nice", "-n", str(niceness), "node", str(SCRIPT), str(spec),
            stdout=asyncio.subprocess.PIPE)
        summary, _ = await node.communicate()
        if node.returncode != 0:
            raise RuntimeError(f"the Node load generator failed (exit {node.returncode})")
        calls = []
        for line in output.read_text().split():
            started_ms, code, latency_ms = line.split(",")
            calls.append((float(started_ms) / 1_000, CODES[int(code)], float(latency_ms)))
        summary = json.loads(summary)
        return NodeRun(calls, summary["not_sent"], summary["cpu_s"])
