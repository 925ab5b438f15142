"""The relay's side of the event chaos runs (event_chaos_scenario.py):
which replica leads the RabbitMQ relay, which one the next kill takes, and
how far the relay has published."""

from __future__ import annotations

import random
from typing import Sequence

from paygrid_server.storage.postgres.relay_leadership import RELAY_LOCK_KEY_SQL
from paygrid_server.storage.relay_position_rows import LOAD_SQL, RELAY_NAME, RELAY_TENANT
from tests.support.crash_rig import CrashRig
from tests.support.event_rabbitmq_consumer import RabbitConsumer
from tests.support.server_process import wait_for

TIMEOUT_S = 180  # generous: the machine is shared; only a broken run waits it out


async def leader(rigs: tuple[CrashRig, ...]) -> int:
    """The replica leading the relay, once one does (a killed leader's lock
    is freed with its connection, and a waiting replica takes it)."""
    await wait_for(lambda: any(rig.relay_leading() for rig in rigs), "a relay leader",
                   TIMEOUT_S)
    return next(i for i, rig in enumerate(rigs) if rig.relay_leading())


async def lead_from(rigs: tuple[CrashRig, ...], victims: Sequence[int]) -> None:
    """Before the load: if the relay leader is a replica that is never
    killed (the suite's calls go to it), it is restarted, so the lock passes
    to one that is, and the leader can be killed."""
    if (first := await leader(rigs)) not in victims:
        # The others wait on the lock first: else the restarted one may take it again.
        await wait_for(lambda: _waiting_for_lock(rigs[first]) == len(rigs) - 1,
                       "the other replicas waiting for the relay lock", TIMEOUT_S)
        rigs[first].kill()
        await rigs[first].restart()
        await wait_for(lambda: not rigs[first].relay_leading() and any(
            rigs[i].relay_leading() for i in victims), "the lock passed on",
            TIMEOUT_S)


def victim_of(rigs: tuple[CrashRig, ...], victims: Sequence[int], rng: random.Random,
              k: int) -> int:
    """The next kill's: at even kills the relay leader, when it may be killed."""
    leaders = [i for i in victims if rigs[i].relay_leading()]
    if len(rigs) > 1 and k % 2 == 0 and leaders:
        return leaders[0]
    return rng.choice(victims)


async def relayed_through(rig: CrashRig, broker: RabbitConsumer, seq: int) -> None:
    """Until the relay's saved cursor is at `seq` (every event up to it is
    in the queue: confirmed) and the queue is empty (every one in the file)."""
    await wait_for(lambda: relay_cursor(rig) >= seq, f"the relay at seq {seq}",
                   TIMEOUT_S)
    await wait_for(broker.queue_empty, "the RabbitMQ queue drained", TIMEOUT_S)


def relay_cursor(rig: CrashRig) -> int:
    """The relay's saved cursor: every event up to it was confirmed by the broker."""
    rows = rig.rows(LOAD_SQL.format(f"'{RELAY_TENANT}'", f"'{RELAY_NAME}'"))
    return rows[0][0] if rows else 0


def _waiting_for_lock(rig: CrashRig) -> int:
    """Sessions waiting for this deployment's relay lock (PostgreSQL; the
    key is per schema, and rig.rows reads in the rig's schema)."""
    (key,), = rig.rows(f"SELECT {RELAY_LOCK_KEY_SQL}")
    rows = rig.rows(
        "SELECT classid::bigint, objid::bigint FROM pg_locks WHERE locktype = 'advisory' "
        "AND objsubid = 1 AND NOT granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
    return sum(1 for classid, objid in rows
               if (classid, objid) == ((key >> 32) & 0xFFFF_FFFF, key & 0xFFFF_FFFF))
