"""A RabbitMQ consumer of the relayed events that outlives relay kills, for
the chaos runs (tests/support/event_chaos_scenario.py).

A durable queue on the run's own vhost, bound with '#' to the relay's
exchange before any event is published, so every event the relay gets
confirmed is in it. Manual acks: each message's delivery line is appended
to the file (on disk, fsync) before basic_ack, so a consumer that dies
between the two gets the message again (a duplicate, counted). The body is
the paygrid.v1.Event ListEvents returns; the line carries seq 0, as a
broker consumer in general has no seq (the checker checks it per aggregate).
`restart()` stands for the consumer process dying: its channel closes with
messages unacked, and the broker delivers them again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aio_pika

from paygrid.v1 import event_service_pb2 as ev
from tests.support.rabbitmq_connection import open_connection
from tests.support.event_delivery_check import Delivery, DeliveryLog, Payload
from tests.support.rabbitmq import EXCHANGE, rabbitmqctl

QUEUE = "chaos.deliveries"
PREFETCH = 32  # unacked at once: what a restart sends again
BACKOFF_S = 0.2


class RabbitConsumer:
    def __init__(self, name: str, vhost: str, url: str, deliveries: Path) -> None:
        self.name = name
        self.vhost = vhost
        self.url = url
        self.log = DeliveryLog(deliveries)
        self.sessions = 0  # channels opened (a restart opens the next)
        self.restarts = 0
        self.delivered = 0
        self._restart = asyncio.Event()

    async def declare(self) -> None:
        """The exchange (as the relay declares it) and the queue bound to
        it: before the servers start, so no event is published unrouted."""
        connection = await open_connection(self.url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC,
                                                      durable=True)
            queue = await channel.declare_queue(QUEUE, durable=True)
            await queue.bind(exchange, "#")

    async def run(self) -> None:
        """Until cancelled: a session per connection, again after a restart
        or a broken connection."""
        try:
            while True:
                try:
                    await self._session()
                except (aio_pika.exceptions.AMQPError, OSError):
                    await asyncio.sleep(BACKOFF_S)
        finally:
            self.log.close()

    async def _session(self) -> None:
        self.sessions += 1
        self._restart.clear()
        session = self.sessions
        connection = await open_connection(self.url)
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=PREFETCH)
            queue = await channel.declare_queue(QUEUE, durable=True, passive=True)
            async with queue.iterator() as messages:
                restart = asyncio.ensure_future(self._restart.wait())
                taken = None
                try:
                    while True:
                        taken = asyncio.ensure_future(messages.__anext__())
                        await asyncio.wait({taken, restart}, return_when=asyncio.FIRST_COMPLETED)
                        if restart.done():
                            return  # the channel closes with its messages unacked
                        try:
                            message = taken.result()
                        except StopAsyncIteration:
                            return  # the broker closed the channel: the next session
                        await self._deliver(message, session)
                finally:
                    restart.cancel()
                    if taken is not None and not taken.done():
                        # Restarted or stopped while waiting: the iterator's
                        # close may end it with StopAsyncIteration; seen.
                        taken.cancel()
                        taken.add_done_callback(_retrieved)

    async def _deliver(self, message: aio_pika.abc.AbstractIncomingMessage,
                       session: int) -> None:
        event = ev.Event.FromString(message.body)
        # fsync off the event loop: the channel simulators share this loop.
        await asyncio.to_thread(self.log.append, Delivery(
            consumer=self.name, session=session, seq=0, event_id=event.event_id,
            type=event.type, aggregate_type=event.aggregate_type,
            aggregate_id=event.aggregate_id, version=event.aggregate_version,
            payload=Payload.of_any(event.data)))
        self.delivered += 1
        await message.ack()  # only now: the line is on disk

    def restart(self) -> None:
        self.restarts += 1
        self._restart.set()

    def queue_empty(self) -> bool:
        """No message ready or unacked: everything the broker holds was
        written to the file."""
        rows = rabbitmqctl("list_queues", "-p", self.vhost, "name", "messages",
                           "--no-table-headers")
        return any(row.split("\t") == [QUEUE, "0"] for row in rows.splitlines())


def _retrieved(future: asyncio.Future) -> None:
    """Marks a cancelled take's outcome as seen, whatever it was."""
    if not future.cancelled():
        future.exception()
