"""Gives committed events their seq, the cursor readers page by.

Why not the BIGSERIAL id: ids are taken at INSERT, and a transaction that
took id 7 may commit after one that took id 8. A reader that read 8 and asks
"after 8" would never see 7. So the cursor is a second number, seq, given
only to committed rows, by one sequencer at a time (a transaction-level
advisory lock: every replica may run it, they take turns). Each run numbers
the rows it can see without a seq, in id order, above every seq given
before. A transaction still open when a run starts is numbered by a later
run, above everything readers have seen: it is late, never skipped.

Runs are cheap when nothing is waiting (an index on the rows without seq);
readers run it before they read, so an event is listed as soon as it is
committed, whichever replica wrote it, even one that crashed right after.

Retention may delete every event: the numbering then goes on above its
pruned_through mark (deleted in the same transaction as the rows), never
from 1 again.
"""

from __future__ import annotations

from paygrid_server.storage.event_positions import PRUNED_SQL
from paygrid_server.storage.postgres.database import PostgresDatabase

# pg_advisory_xact_lock key: "paygrid\1" (the migrations hold "paygrid\0").
SEQUENCER_LOCK_KEY = 0x7061796772696401
# The highest seq ever given, deleted or not.
_HIGH_WATER = f"greatest(coalesce(max(seq), 0), ({PRUNED_SQL}))"
HIGH_WATER_SQL = f"SELECT {_HIGH_WATER} FROM events"
# Rows numbered per run: bounds one run's transaction; the next run goes on.
SEQUENCE_BATCH = 10_000


async def sequence_events(database: PostgresDatabase) -> int:
    """Numbers committed events without a seq; returns how many."""
    total = 0
    while True:
        async with database.transaction() as db:
            await db.execute("SELECT pg_advisory_xact_lock($1)", SEQUENCER_LOCK_KEY)
            # A new statement after the lock: under READ COMMITTED its snapshot
            # includes the previous run's commit, so max(seq) is the latest.
            status = await db.execute(
                f"WITH top AS (SELECT {_HIGH_WATER} AS seq FROM events), "
                "waiting AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM "
                "  (SELECT id FROM events WHERE seq IS NULL ORDER BY id LIMIT $1) AS w) "
                "UPDATE events SET seq = top.seq + waiting.n FROM top, waiting "
                "WHERE events.id = waiting.id", SEQUENCE_BATCH)
        numbered = int(status.rsplit(" ", 1)[1])
        total += numbered
        if numbered < SEQUENCE_BATCH:
            return total
