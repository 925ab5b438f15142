"""RabbitMQ for the tests: whether it answers, a vhost per test (made and
deleted with rabbitmqctl, as root), a consumer queue, and a TCP proxy that
can hold the broker's answers (confirms) and cut the connection.

RabbitMQ is expected at 127.0.0.1:5672 with guest/guest (.ci/run starts it).
Where it does not answer, the tests are skipped with the reason, except
under CI=true, where they fail: CI must not pass by skipping them.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import aio_pika
import pytest

from tests.support.rabbitmq_connection import open_connection

HOST, PORT = "127.0.0.1", 5672
USER, PASSWORD = "guest", "guest"
EXCHANGE = "paygrid.events"


@functools.cache
def rabbitmq_unavailable_reason() -> str | None:
    try:
        socket.create_connection((HOST, PORT), timeout=5).close()
    except OSError as error:
        return f"RabbitMQ not reachable at {HOST}:{PORT} ({error}); start it (.ci/run does)"
    if shutil.which("rabbitmqctl") is None or os.geteuid() != 0:
        return "rabbitmqctl (run as root) is needed to make a vhost per test"
    return None


def require_rabbitmq() -> None:
    reason = rabbitmq_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the RabbitMQ tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stderr}"
    return done.stdout


def rabbitmq_close_connection(pid: str) -> None:
    rabbitmqctl("close_connection", pid, "closed by a paygrid test")


def url(vhost: str, port: int = PORT) -> str:
    return f"amqp://{USER}:{PASSWORD}@{HOST}:{port}/{vhost}"


@dataclass
class Consumed:
    """Messages a test queue received, in arrival order."""

    messages: list[aio_pika.abc.AbstractIncomingMessage] = field(default_factory=list)

    def seqs(self) -> list[int]:
        return [m.headers["cloudEvents:paygridseq"] for m in self.messages]


class Vhost:
    """A vhost of its own for one test, guest allowed; deleted (with its
    exchanges, queues and connections) by close()."""

    def __init__(self) -> None:
        self.name = f"paygrid_test_{uuid.uuid4().hex[:12]}"
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, USER, ".*", ".*", ".*")
        self._connection: aio_pika.abc.AbstractConnection | None = None

    @property
    def url(self) -> str:
        return url(self.name)

    async def consume(self, binding_keys: tuple[str, ...] = ("#",)) -> Consumed:
        """A queue bound to the exchange (declared here if the relay has not
        yet) with these keys; what arrives is appended to the result."""
        if self._connection is None:
            self._connection = await open_connection(self.url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        queue = await channel.declare_queue(exclusive=True)
        for key in binding_keys:
            await queue.bind(exchange, key)
        consumed = Consumed()

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            consumed.messages.append(message)
            await message.ack()

        await queue.consume(take)
        return consumed

    def relay_connections(self) -> list[str]:
        """The pids of the paygrid relay connections open in this vhost."""
        rows = rabbitmqctl("list_connections", "pid", "vhost", "client_properties",
                           "--no-table-headers")
        return [row.split("\t")[0] for row in rows.splitlines()
                if f"\t{self.name}\t" in row and "paygrid-event-relay" in row]

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        rabbitmqctl("delete_vhost", self.name)


class GatedProxy:
    """Loopback TCP proxy to the broker. hold_answers() stops forwarding
    what the broker sends (its confirms wait in the proxy; what the client
    sends still goes through); cut() closes every connection through it;
    client_sent(data) returns once the client has sent those bytes."""

    def __init__(self) -> None:
        self._answers_flow = asyncio.Event()
        self._answers_flow.set()
        self._from_client = bytearray()
        self._client_wrote = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def hold_answers(self) -> None:
        self._answers_flow.clear()

    async def client_sent(self, data: bytes) -> None:
        while data not in self._from_client:
            self._client_wrote.clear()
            await self._client_wrote.wait()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        self._answers_flow.set()  # new connections flow freely

    async def _serve(self, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        broker_reader, broker_writer = await asyncio.open_connection(HOST, PORT)
        self._writers += [client_writer, broker_writer]
        await asyncio.gather(self._pipe(client_reader, broker_writer, None, self._heard),
                             self._pipe(broker_reader, client_writer, self._answers_flow),
                             return_exceptions=True)
        for writer in (client_writer, broker_writer):
            writer.transport.abort()

    def _heard(self, data: bytes) -> None:
        self._from_client += data
        self._client_wrote.set()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    gate: asyncio.Event | None, tap: Callable[[bytes], None] | None = None) -> None:
        try:
            while data := await reader.read(65536):
                if tap is not None:
                    tap(data)
                if gate is not None:
                    await gate.wait()
                if writer.transport.is_closing():
                    return
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
