"""scripts/open_loop_load.js, the benches' Node load generator, through
scripts/node_load.py: with either transport (grpc-js, or gRPC written on
Node's own http2) every call reaches a real grpc.aio server with its
metadata, and each call's status comes back as the server answered it (OK,
an error answered at once, a deadline passed while the server held it)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import grpc
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from node_load import node_unary_load  # noqa: E402
from tests.clients.test_node_client import node_client  # noqa: E402,F401 (a fixture: npm ci)

pytestmark = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                reason="the Node load generator needs `node` and `npm`")

METHOD = "/loadtest.Probe/Call"
METADATA = (("x-probe", "sent"),)


class Probe:
    """Answers by the request's bytes: b"ok..." OK (the bytes back), b"refuse"
    RESOURCE_EXHAUSTED at once (trailers only), b"late" its bytes back and
    then DATA_LOSS (its status in trailers after a message), b"hold" never
    (until the caller's deadline); any call without METADATA UNAUTHENTICATED."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.held = 0
        self.peers: set[str] = set()

    async def call(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.received.append(request)
        self.peers.add(context.peer())
        if ("x-probe", "sent") not in tuple(context.invocation_metadata()):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no x-probe")
        if request == b"refuse":
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "full")
        if request == b"late":
            await context.write(request)  # the message first: trailers then carry the status
            await context.abort(grpc.StatusCode.DATA_LOSS, "after the message")
        if request == b"hold":
            self.held += 1
            await asyncio.Event().wait()  # never set: the deadline ends the call
        return request


async def _probe_server(options: tuple = ()):
    found = Probe()
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "loadtest.Probe", {"Call": grpc.unary_unary_rpc_method_handler(found.call)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, found, f"127.0.0.1:{port}"


@pytest.fixture
async def probe():
    server, found, target = await _probe_server()
    yield found, target
    await server.stop(None)


@pytest.mark.parametrize("transport", ["grpc-js", "http2"])
async def test_each_calls_status_is_the_servers_answer(node_client, probe, transport) -> None:
    found, target = probe
    bodies = [b"ok-1", b"refuse", b"late", b"hold", b"ok-5"]
    # An open loop of 10 calls/s for 0.5 s sends exactly the 5 calls due at
    # 0, 100, 200, 300 and 400 ms, however late its timer fires.
    calls, not_sent, generator_cpu_s = await node_unary_load(
        target, METHOD, lambda n: bodies[n - 1], len(bodies), METADATA, 1.0,
        phases=[(10, 0.5)], transport=transport)
    assert not_sent == 0
    assert found.received == bodies and found.held == 1
    assert [code for _, code, _ in sorted(calls)] == [
        grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.OK]
    assert generator_cpu_s > 0


@pytest.mark.parametrize("transport", ["grpc-js", "http2"])
async def test_metadata_is_sent_with_every_call(node_client, probe, transport) -> None:
    found, target = probe
    calls, _, _ = await node_unary_load(target, METHOD, lambda n: b"ok-%d" % n, 2, (), 5.0,
                                        phases=[(10, 0.2)], transport=transport)
    assert [code for _, code, _ in calls] == [grpc.StatusCode.UNAUTHENTICATED] * 2


@pytest.mark.parametrize("transport", ["grpc-js", "http2"])
async def test_a_closed_loop_over_several_connections_keeps_its_calls_in_flight(
        node_client, probe, transport) -> None:
    found, target = probe
    calls, _, _ = await node_unary_load(target, METHOD, lambda n: b"ok-%d" % n, 100_000,
                                        METADATA, 5.0, closed_loop=(8, 0.3), connections=3,
                                        transport=transport)
    assert calls and all(code is grpc.StatusCode.OK for _, code, _ in calls)
    # Every body sent once, in order, as the calls were made.
    assert sorted(found.received, key=lambda body: int(body[3:])) == [
        b"ok-%d" % n for n in range(1, len(calls) + 1)]


@pytest.mark.parametrize("transport", ["grpc-js", "http2"])
async def test_calls_go_on_over_a_new_connection_after_the_server_sends_goaway(
        node_client, transport) -> None:
    """As nginx does after keepalive_requests (1000) on a connection, and
    paygrid after max_connection_age: the calls after the GOAWAY go out on a
    new connection, as from a gRPC client, instead of failing UNAVAILABLE."""
    server, found, target = await _probe_server(options=(
        ("grpc.max_connection_age_ms", 150), ("grpc.max_connection_age_grace_ms", 5_000)))
    try:
        calls, not_sent, _ = await node_unary_load(
            target, METHOD, lambda n: b"ok-%d" % n, 200, METADATA, 5.0,
            phases=[(100, 1.0)], transport=transport)
    finally:
        await server.stop(None)
    assert not_sent == 0 and len(calls) == 100
    assert all(code is grpc.StatusCode.OK for _, code, _ in calls)
    assert len(found.peers) >= 2  # a connection's age ran out at least once
