"""Events per second through the RabbitMQ relay, beside Pay throughput
(issue 16). One server with [events.rabbitmq] set, a vhost of its own and
a consumer queue bound to every event (bound before the relay may publish:
an unroutable event is a failure to the relay):

1. catch-up: the relay's user gets no permission on the vhost, so it
   cannot connect while Pay load writes a backlog; then it is granted, and
   the consumer times the backlog from its first message to its last;
2. following: Pay load again with the relay caught up; the consumer counts
   what arrives during the load, then the time until it has every event.

Returns {"not_measured": reason} where RabbitMQ does not answer (under
CI=true tests/deploy/test_bench_scripts.py fails instead).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

import aio_pika

from bench_load import measure_unary
from bench_pay_load import PAY_METHOD, check_succeeded, pay_request_maker
from bench_server import AUTH_METADATA, RunningServer, cpu_s, events_stored, paygrid_server
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/support/
from tests.support import rabbitmq  # noqa: E402
from tests.support.rabbitmq_connection import open_connection  # noqa: E402

ARRIVAL_TIMEOUT_S = 120


class Counter:
    """A queue bound to `#` on the relay's exchange; counts what arrives
    (no acks: the count, not the queue, is the point) and when."""

    def __init__(self) -> None:
        self.received = 0
        self.first_at = self.last_at = 0.0
        self._want = 0
        self._reached = asyncio.Event()
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def start(self, url: str) -> None:
        self._connection = await open_connection(url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(rabbitmq.EXCHANGE, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "#")
        await queue.consume(self._take, no_ack=True)

    async def _take(self, _message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.last_at = time.perf_counter()
        if not self.received:
            self.first_at = self.last_at
        self.received += 1
        if self.received >= self._want:
            self._reached.set()

    async def wait_for(self, count: int) -> None:
        self._want = count
        self._reached.clear()
        if self.received < count:
            await asyncio.wait_for(self._reached.wait(), ARRIVAL_TIMEOUT_S)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


async def _pay_load(server: RunningServer, concurrency: int, duration_s: float) -> dict:
    return await measure_unary(server.target, PAY_METHOD, pay_request_maker(uuid.uuid4().hex[:8]),
                               concurrency, duration_s, AUTH_METADATA, check_succeeded)


async def run(duration_s: float, concurrency: int) -> dict:
    reason = rabbitmq.rabbitmq_unavailable_reason()
    if reason is not None:
        return {"not_measured": reason}
    vhost = rabbitmq.Vhost()
    user, password = f"paygrid_bench_relay_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    rabbitmq.rabbitmqctl("add_user", user, password)
    counter = Counter()
    try:
        await counter.start(vhost.url)
        relay_url = f"amqp://{user}:{password}@{rabbitmq.HOST}:{rabbitmq.PORT}/{vhost.name}"
        async with paygrid_server(in_process_channel_latency_ms=0, channel_called_directly=True,
                                  extra_env={"PAYGRID_EVENTS_RABBITMQ_URL": relay_url,
                                             "PAYGRID_EVENTS_RABBITMQ_EXCHANGE":
                                                 rabbitmq.EXCHANGE}) as server:
            pay_unrelayed = await _pay_load(server, concurrency, duration_s)
            backlog = events_stored(server)
            assert counter.received == 0, "the relay published without permission"
            rabbitmq.rabbitmqctl("set_permissions", "-p", vhost.name, user, ".*", ".*", ".*")
            await counter.wait_for(backlog)  # after the relay's backoff: not timed
            catch_up_s = counter.last_at - counter.first_at

            cpu_before = cpu_s(server.pid)
            before = counter.received
            pay = await _pay_load(server, concurrency, duration_s)
            load_end = time.perf_counter()
            during_load = counter.received - before
            total = events_stored(server)
            await counter.wait_for(total)
            lag_ms = (counter.last_at - load_end) * 1_000
            pay["server_cpu_us_per_call"] = round(
                (cpu_s(server.pid) - cpu_before) * 1e6 / (pay["calls"] + concurrency))
    finally:
        await counter.close()
        await vhost.close()
        rabbitmq.rabbitmqctl("delete_user", user)
    return {
        "pay": pay, "pay_while_the_relay_could_not_connect": pay_unrelayed,
        "follow": {"events": total - backlog, "received_during_load": during_load,
                   "events_per_s": round(during_load / duration_s, 1),
                   "all_in_ms_after_load": round(max(0.0, lag_ms), 1)},
        "catch_up": {"events": backlog, "wall_s": round(catch_up_s, 3),
                     "events_per_s": round((backlog - 1) / max(catch_up_s, 1e-6), 1)},
    }


def markdown_rows(relay: dict) -> list[str]:
    if "not_measured" in relay:
        return [f"| RabbitMQ relay | not measured: {relay['not_measured']} |"]
    pay, follow, catch_up = relay["pay"], relay["follow"], relay["catch_up"]
    return [
        f"| Pay calls/s (with the RabbitMQ relay following) | {pay['qps']:,.0f} |",
        f"| Pay calls/s (the same server, its relay not yet let in) "
        f"| {relay['pay_while_the_relay_could_not_connect']['qps']:,.0f} |",
        f"| Pay server CPU µs per call (with the relay) | {pay['server_cpu_us_per_call']:,} |",
        f"| RabbitMQ relay following: events/s at a consumer during the load "
        f"| {follow['events_per_s']:,.0f} |",
        f"| RabbitMQ relay following: all {follow['events']:,} events at the consumer, "
        f"after the load ended | {follow['all_in_ms_after_load']:,.0f} ms |",
        f"| RabbitMQ relay catching up a backlog (started after it was written) "
        f"| {catch_up['events_per_s']:,.0f} events/s ({catch_up['events']:,} in "
        f"{catch_up['wall_s']} s) |",
    ]
