"""How the server waits for calls: grpc.aio keeps one waiting request task
per *registered* method and asyncio.wait()s on all of them for every call
it takes; paygrid's handlers are generic handlers only, so one request task
serves every method (transport/grpc_server.py). That every method is still
served is what the rest of tests/api shows, health and reflection included."""

from __future__ import annotations

import asyncio
from collections import Counter

from paygrid_server.transport.batch_servicer import BatchServicer
from paygrid_server.transport.event_servicer import EventServicer
from paygrid_server.transport.grpc_server import ConnectionPolicy, start_grpc_server
from paygrid_server.transport.payment_servicer import PaymentServicer


async def test_one_request_task_waits_for_calls_to_every_method() -> None:
    before = asyncio.all_tasks()
    running = await start_grpc_server(
        "127.0.0.1:0", PaymentServicer(None, None), BatchServicer(None), EventServicer(None, None),
        [], None, ConnectionPolicy(60_000, 5_000, 30_000, 10_000, 10_000))
    try:
        waiting = Counter(getattr(task.get_coro(), "__qualname__", "")
                          for task in asyncio.all_tasks() - before)
        assert waiting["AioServer._request_registered_call"] == 0
        assert waiting["AioServer._request_call"] == 1
    finally:
        await running.server.stop(None)
