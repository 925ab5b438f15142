"""A RabbitMQ connection that is either open or closed: never one left
half-made. aio_pika.connect drops a connection whose connect failed without
closing it, so each retry of an unreachable broker would leave one to the
collector (whose __del__ then warns "Connection.close was never awaited").
The tests' consumers and the relay bench connect through this (the relay
itself has its own publishing connection: brokers/amqp_confirming_connection.py)."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractConnection
from aio_pika.connection import make_url


async def open_connection(url: str, *, timeout_s: float | None = None,
                          name: str | None = None) -> AbstractConnection:
    """Connected to `url` (shown to the broker's operators as `name`), or
    closed again and the connect's error raised."""
    properties = {} if name is None else {"connection_name": name}
    connection = aio_pika.Connection(make_url(url), client_properties=properties)
    try:
        await connection.connect(timeout=timeout_s)
    except BaseException:
        await close_quietly(connection)
        raise
    return connection


async def close_quietly(connection: AbstractConnection) -> None:
    """Closed, if it is not: a broken connection's close may fail too, and
    there is nothing more to do with it then."""
    if connection.is_closed:
        return
    try:
        await connection.close()
    except Exception:  # noqa: BLE001 - see the docstring
        pass
