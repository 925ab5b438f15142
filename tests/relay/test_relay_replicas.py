"""Two PostgreSQL replicas with the relay on: one leads (a session advisory
lock), the other waits in PostgreSQL for the lock; SIGKILL the leader and
the other takes over from the saved cursor, without republishing."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import asyncpg

from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from tests.conftest import leg, pay_request
from tests.support.api_key_metadata import keyed_channel
from tests.support.postgres_databases import require_postgres
from tests.support.rabbitmq import Vhost
from tests.support.server_process import ServerProcess, free_port, wait_for
from paygrid_server.storage.postgres.relay_leadership import RELAY_LOCK_KEY_SQL


def _replica(tmp_path: Path, name: str, dsn: str, amqp_url: str) -> tuple[ServerProcess, int]:
    port = free_port()
    config = tmp_path / f"{name}.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
database = "{dsn}"

[events.rabbitmq]
url = "{amqp_url}"
""")
    return ServerProcess(config, tmp_path / f"{name}.log"), port


class RelayLock:
    """The relay's advisory lock in pg_locks: who holds it, who waits."""

    def __init__(self, watch: asyncpg.Connection, key: int) -> None:
        self._watch = watch
        self._classid, self._objid = (key >> 32) & 0xFFFF_FFFF, key & 0xFFFF_FFFF
        self.granted = self.waiting = 0

    async def read(self) -> None:
        rows = await self._watch.fetch(
            "SELECT granted FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
            "AND classid::bigint = $1 AND objid::bigint = $2", self._classid, self._objid)
        self.granted = sum(1 for row in rows if row["granted"])
        self.waiting = len(rows) - self.granted


def _logged(replica: ServerProcess, event: str) -> list[dict]:
    lines = (json.loads(line) for line in replica.log.read_text().splitlines()
             if line.startswith("{"))
    return [line for line in lines if line.get("event") == event]


async def _until(holds, what: str, timeout_s: float = 60) -> None:
    """Until the awaited `holds()` is true (a database read: wait_for takes no coroutines)."""
    deadline = time.monotonic() + timeout_s
    while not await holds():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _lock_is(lock: RelayLock, granted: int, waiting: int):
    async def holds() -> bool:
        await lock.read()
        return (lock.granted, lock.waiting) == (granted, waiting)
    return holds


async def test_one_replica_relays_and_another_takes_over_from_the_saved_cursor_when_killed(
        tmp_path: Path, vhost: Vhost, postgres_databases) -> None:
    require_postgres()
    dsn = await postgres_databases.create()
    consumed = await vhost.consume()
    leader, leader_port = _replica(tmp_path, "a", dsn, vhost.url)
    standby, standby_port = _replica(tmp_path, "b", dsn, vhost.url)
    watch = await asyncpg.connect(dsn)
    channel = keyed_channel(f"127.0.0.1:{standby_port}")
    try:
        lock = RelayLock(watch, await watch.fetchval(f"SELECT {RELAY_LOCK_KEY_SQL}"))
        await leader.start(leader_port)
        await _until(_lock_is(lock, 1, 0), "the first replica leading")
        await standby.start(standby_port)
        await _until(_lock_is(lock, 1, 1), "the second replica waiting for the lead")
        await wait_for(lambda: len(vhost.relay_connections()) == 1, "the leader's connection")

        stub = pb_grpc.PaymentServiceStub(channel)
        await stub.Pay(pay_request("k-1", leg("payee_0001", "EUR", 1_000)), timeout=30)
        await wait_for(lambda: consumed.seqs() == [1, 2, 3], "the standby's events relayed")
        assert len(vhost.relay_connections()) == 1  # the standby never connected
        cursor_sql = ("SELECT cursor FROM event_consumers WHERE tenant_id = '' "
                      "AND name = 'relay:rabbitmq'")
        async def cursor_saved() -> bool:
            return await watch.fetchval(cursor_sql) == 3
        await _until(cursor_saved, "the leader's cursor saved")

        leader.kill()
        await _until(_lock_is(lock, 1, 0), "the second replica leading")
        await wait_for(lambda: _logged(standby, "event_relay.connected"), "the new leader connected")
        assert [line["cursor"] for line in _logged(standby, "event_relay.connected")] == [3]
        await stub.Pay(pay_request("k-2", leg("payee_0002", "EUR", 2_000)), timeout=30)
        await wait_for(lambda: len(consumed.messages) >= 6, "the second payment relayed")
        assert consumed.seqs() == [1, 2, 3, 4, 5, 6]  # from the saved cursor: none again
    finally:
        await channel.close()
        await watch.close()
        leader.terminate()
        standby.terminate()
