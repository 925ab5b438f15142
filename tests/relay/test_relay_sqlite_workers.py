"""`serve --workers 2` on one SQLite file with the relay on: exactly one
worker relays (the holder of the flock on "<database>.relay.lock"); SIGKILL
it and a live worker takes over from the saved cursor, without republishing."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from tests.conftest import leg, pay_request
from tests.relay.test_relay_replicas import _replica
from tests.support.rabbitmq import Vhost
from tests.support.server_process import ServerProcess, wait_for
from tests.support.worker_log import log_events, own_connection, ready_workers

CURSOR_SQL = "SELECT cursor FROM event_consumers WHERE tenant_id = '' AND name = 'relay:rabbitmq'"


def _saved_cursor(database: Path) -> int | None:
    with sqlite3.connect(database) as db:
        row = db.execute(CURSOR_SQL).fetchone()
    return row[0] if row else None


def _relaying(log: Path) -> list[int]:
    """Pids of the workers that connected as the relay, in that order."""
    return [e["worker_pid"] for e in log_events(log, "event_relay.connected")]


async def test_one_sqlite_worker_relays_and_another_takes_over_when_it_is_killed(
        tmp_path: Path, vhost: Vhost) -> None:
    consumed = await vhost.consume()
    database = tmp_path / "paygrid.sqlite3"
    lone, port = _replica(tmp_path, "paygrid", str(database), vhost.url)
    server = ServerProcess(lone.config, lone.log, ("--workers", "2"))
    try:
        await server.start(port)
        await wait_for(lambda: len(ready_workers(server.log)) == 2, "both workers ready")
        await wait_for(lambda: len(_relaying(server.log)) == 1, "one worker relaying")
        async with own_connection(f"127.0.0.1:{port}") as channel:
            await pb_grpc.PaymentServiceStub(channel).Pay(
                pay_request("k-1", leg("payee_0001", "EUR", 1_000)), timeout=30)
        await wait_for(lambda: consumed.seqs() == [1, 2, 3], "the events relayed")
        assert len(vhost.relay_connections()) == 1, "the other worker never connected"
        await wait_for(lambda: _saved_cursor(database) == 3, "the leader's cursor saved")

        [leader] = _relaying(server.log)
        os.kill(leader, signal.SIGKILL)
        await wait_for(lambda: len(_relaying(server.log)) == 2, "another worker relaying")
        successor = _relaying(server.log)[1]
        assert successor != leader
        assert [e["cursor"] for e in log_events(server.log, "event_relay.connected")
                if e["worker_pid"] == successor] == [3]
        async with own_connection(f"127.0.0.1:{port}") as channel:
            await pb_grpc.PaymentServiceStub(channel).Pay(
                pay_request("k-2", leg("payee_0002", "EUR", 2_000)), timeout=30)
        await wait_for(lambda: len(consumed.messages) >= 6, "the second payment relayed")
        assert consumed.seqs() == [1, 2, 3, 4, 5, 6]  # from the saved cursor: none again
        assert len(vhost.relay_connections()) == 1
    finally:
        server.terminate()
