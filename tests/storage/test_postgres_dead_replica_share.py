"""PostgreSQL's group queue: a replica declared dead (expire_leases_of, told
by the supervisor that restarts it) gives up its share of every batch's
parallelism at once, not only its leases. Each live replica takes at most
parallelism / live replicas of a batch, and a dead one counted as live
kept the survivors to a smaller share until its heartbeat aged out
(batch_lease_ms)."""

from __future__ import annotations

import pytest

from paygrid_server.storage.postgres.batch_store import PostgresBatchStore
from paygrid_server.storage.postgres.database import PostgresDatabase, PostgresLimits
from paygrid_server.storage.postgres.group_queue import PostgresGroupQueue
from paygrid_server.transport.event_messages import ProtobufSnapshots
from tests.support.queued_batch import queue_three_groups

pytestmark = pytest.mark.postgresql_only

UID = "bat_dead"
LEASE_MS = 600_000  # no lease runs out during the test: only the expiry frees one


async def test_a_dead_replicas_share_goes_to_the_live_one_at_once(postgres_databases) -> None:
    database = await PostgresDatabase.open(await postgres_databases.create(),
                                           PostgresLimits(pool_max_connections=4))
    try:
        store = PostgresBatchStore(database, ProtobufSnapshots())
        queue = PostgresGroupQueue(database, store)
        await queue_three_groups(store, queue, UID)
        a = await queue.claim_group("A", LEASE_MS)
        b = await queue.claim_group("B", LEASE_MS)
        assert a is not None and b is not None
        # Parallelism 2 over two live replicas: one group each.
        assert await queue.claim_group("A", LEASE_MS) is None

        assert await queue.expire_leases_of("B") == 1
        taken = await queue.claim_group("A", LEASE_MS)
        assert taken is not None, "A still held to half of the batch by a dead replica"
        assert (taken.group_no, taken.token) == (b.group_no, 2)
        # Both of the batch's leases are A's now: the parallelism still holds.
        assert await queue.claim_group("A", LEASE_MS) is None
    finally:
        await database.close()
