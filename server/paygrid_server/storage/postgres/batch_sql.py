"""What the PostgreSQL batch store and group queue share: items written a
chunk per statement (each column of a chunk as one array parameter, turned
back into rows by unnest(): one round trip, one plan, any chunk size), the
planner settings that keep a chunk's statements index probes, and the
database's clock."""

from __future__ import annotations

from typing import Iterator, Sequence, TypeVar

import asyncpg

from paygrid_server.domain.model.batch import BatchGroup, BatchItem, BatchItemStatus
from paygrid_server.storage.batch_rows import ITEM_COLUMNS, item_from_row, item_state_row

# Rows per statement: arrays have no parameter limit, but a bounded chunk
# bounds one statement's time (statement_timeout) and the memory of its
# arrays on both sides.
CHUNK_ROWS = 5_000

T = TypeVar("T")


def chunks(rows: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), CHUNK_ROWS):
        yield rows[start:start + CHUNK_ROWS]


def columns(rows: Sequence[tuple]) -> list[list]:
    """Rows as one list per column: the arrays unnest() takes."""
    return [list(column) for column in zip(*rows)]


# An item's state: everything that changes after it is stored, and the
# version of the event that last reported it.
SAVE_STATES = (
    "UPDATE batch_items SET status = state.status, attempt = state.attempt, "
    "group_no = state.group_no, channel_reference = state.channel_reference, "
    "failure_reason = state.failure_reason, failure_message = state.failure_message, "
    "failure_decline_code = state.failure_decline_code, version = state.version "
    "FROM unnest($2::bigint[], $3::text[], $4::int[], $5::int[], $6::text[], $7::text[], "
    "$8::text[], $9::text[], $10::bigint[]) AS state (seq, status, attempt, group_no, "
    "channel_reference, failure_reason, failure_message, failure_decline_code, version) "
    "WHERE batch_items.batch_uid = $1 AND batch_items.seq = state.seq")


# The planner cannot know how many items the batch being written has (its
# statistics lag, and a new batch_uid looks rare), so it would join a chunk
# to the batch's rows by scanning them all (batch_items_by_status starts
# with batch_uid): per chunk, O(batch), which is quadratic over a 1M-item
# batch. A chunk is at most CHUNK_ROWS rows: one primary-key lookup each.
LOOKUPS_BY_KEY = ("SET LOCAL enable_hashjoin = off", "SET LOCAL enable_mergejoin = off",
                  "SET LOCAL enable_bitmapscan = off")

BY_GROUP = ("SET LOCAL enable_seqscan = off", "SET LOCAL enable_bitmapscan = off")

IN_INDEX_ORDER = ("SET LOCAL enable_bitmapscan = off", "SET LOCAL enable_sort = off")


async def by_key_lookups(db: asyncpg.Connection) -> None:
    for setting in LOOKUPS_BY_KEY:
        await db.execute(setting)


async def save_states(db: asyncpg.Connection, batch_uid: str, items: list[BatchItem]) -> None:
    await by_key_lookups(db)
    await write_states(db, batch_uid, items)


async def write_states(db: asyncpg.Connection, batch_uid: str, items: list[BatchItem]) -> None:
    """save_states, the transaction's planner settings already made (by_key_lookups)."""
    for chunk in chunks(items):
        await db.execute(SAVE_STATES, batch_uid,
                         *columns([(*item_state_row(i), i.version) for i in chunk]))


def rows_touched(status: str) -> int:
    """Rows an UPDATE touched, from its command tag ("UPDATE 3")."""
    return int(status.rsplit(" ", 1)[1])


# The database's clock in µs, fixed for a statement: every replica's leases
# are measured on one clock.
NOW_US = "(extract(epoch FROM statement_timestamp()) * 1000000)::bigint"


# NOTIFY'd (at commit) when a group is queued or done: idle replicas claim
# at once and streams learn of groups done elsewhere (LISTEN, watch_groups).
GROUPS_CHANGED = "paygrid_batch_groups"


async def mark_items_processing(db: asyncpg.Connection, batch_uid: str, group: BatchGroup) -> None:
    """A group is formed from items as stored; only their status and group
    number change when it starts, the same for all of them."""
    await by_key_lookups(db)
    processing = [item.seq for item in group.items if item.status is BatchItemStatus.PROCESSING]
    for chunk in chunks(processing):
        await db.execute("UPDATE batch_items SET status = 'PROCESSING', group_no = $1 "
                         "WHERE batch_uid = $2 AND seq = ANY($3::bigint[])",
                         group.group_no, batch_uid, chunk)


async def stored_statuses(db: asyncpg.Connection, batch_uid: str,
                          items: list[BatchItem]) -> dict[int, str]:
    """The items' statuses as stored, by seq."""
    found: dict[int, str] = {}
    for chunk in chunks([item.seq for item in items]):
        found.update((row[0], row[1]) for row in await db.fetch(
            "SELECT seq, status FROM batch_items WHERE batch_uid = $1 "
            "AND seq = ANY($2::bigint[])", batch_uid, chunk))
    return found


async def groups_as_stored(db: asyncpg.Connection, batch_uid: str,
                           group_nos: list[int]) -> list[BatchGroup]:
    """Each group with every item of it, as stored (batch_items_by_group)."""
    groups = []
    for setting in BY_GROUP:
        await db.execute(setting)
    for group_no in group_nos:
        key, started_at_us, completed_at_us = await db.fetchrow(
            "SELECT group_key, started_at_us, completed_at_us FROM batch_groups "
            "WHERE batch_uid = $1 AND group_no = $2", batch_uid, group_no)
        rows = await db.fetch(f"SELECT {ITEM_COLUMNS} FROM batch_items WHERE batch_uid = $1 "
                              "AND group_no = $2 ORDER BY seq", batch_uid, group_no)
        groups.append(BatchGroup(group_no, key, [item_from_row(row) for row in rows],
                                 started_at_us, completed_at_us or 0))
    return groups
