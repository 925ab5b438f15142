"""Batch items on SQLite, a chunk per statement: their states written, and
read back by seq or by group, inside the writer's transaction."""

from __future__ import annotations

import functools
import sqlite3
from itertools import chain
from operator import attrgetter
from typing import Iterator, Sequence, TypeVar

from paygrid_server.domain.model.batch import BatchGroup, BatchItem
from paygrid_server.storage.batch_rows import (
    ITEM_COLUMNS,
    every_item,
    item_from_row,
    item_state_row,
)
from paygrid_server.storage.failure_columns import failure_columns
from paygrid_server.storage.sqlite import batch_item_counts
from paygrid_server.storage.sqlite.batch_item_key import OF_BATCH
from paygrid_server.storage.sqlite.batch_item_counts import status_counts

# A statement that writes items is `UPDATE OR ROLLBACK`: a statement that may
# stop half-way (several rows, and a constraint that aborts) keeps a copy of
# every page it changes in a statement journal, to undo itself alone. A
# failure here fails the whole unit anyway, and the writer rolls the round
# back and runs each unit again alone (sqlite/writer.py), so SQLite can roll
# the transaction back itself and keep no copies. (The items' INSERT keeps
# its journal: a foreign key makes any multi-row INSERT able to abort.)
_OR_ROLLBACK = "UPDATE OR ROLLBACK batch_items SET"

# Items are read and written a chunk per statement, not a statement per
# item: each statement lets the GIL go, and one run on a workers' writer
# thread has to win it back from the event loop. A chunk binds at most
# 18 * 256 host parameters, well under SQLite's default limit (32766).
_CHUNK_ROWS = 256

T = TypeVar("T")


def chunks(rows: Sequence[T]) -> Iterator[Sequence[T]]:
    """`rows` in chunks of _CHUNK_ROWS, the rest in halving sizes (128, 64...
    1), so statements come in a few sizes: each is prepared once, then taken
    from the connection's statement cache (preparing a statement of 256 rows
    costs about as much as running it)."""
    start, size = 0, _CHUNK_ROWS
    while start < len(rows):
        while size > len(rows) - start:
            size //= 2
        yield rows[start:start + size]
        start += size


# A group's two statements (its mark, its results) take up to this many of
# its items at once (a group of limits.BATCH_MAX_GROUP_SIZE in one): each
# statement lets the GIL go (on a workers' writer thread, a hand-over), and
# a 500-item group in chunks() is six. The statement is sized to the next
# power of two, so that there are few sizes to prepare, and filled up by
# repeating the last row: in an IN list or in the VALUES table an UPDATE
# joins, a row twice changes it once, and counts once (tests:
# test_sqlite_group_mark_ranges.py, test_sqlite_batch_item_rows_stored.py).
# Side by side, 100k items in groups of 500 (and of 100): server CPU per item
# 0.975 (0.975), every round lower. At most 8 * 1024 host parameters.
_GROUP_CHUNK_ROWS = 1024


def group_chunks(rows: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), _GROUP_CHUNK_ROWS):
        yield rows[start:start + _GROUP_CHUNK_ROWS]


def padded_rows(count: int) -> int:
    """The statement size for `count` rows: the next power of two."""
    return 1 << (count - 1).bit_length()


def padded(values: Sequence[T], per_row: int = 1) -> list[T]:
    """`values` (rows of `per_row` values each, flat) with their last row
    repeated up to padded_rows rows."""
    rows = len(values) // per_row
    return [*values, *values[-per_row:] * (padded_rows(rows) - rows)]


@functools.cache
def in_list(count: int) -> str:
    return ", ".join("?" * count)


# An item's state: everything that changes after it is stored, and the
# version of the event that last reported it.
_STATE_COLUMNS = ("status", "attempt", "group_no", "channel_reference", "failure_reason",
                  "failure_message", "failure_decline_code", "version")
# What a group's charge changes: its items' group_no was stored when the
# group started and stays. Left out of the SET list, so the UPDATE leaves
# batch_items_by_group alone (SQLite rewrites the entries of every index
# on a column named there, changed or not: ~2 us per item).
_RESULT_COLUMNS = tuple(c for c in _STATE_COLUMNS if c != "group_no")


_FAILURE_COLUMNS = ("failure_reason", "failure_message", "failure_decline_code")
# A result with no failure (the many): its failure columns are set NULL in
# the statement's text, not bound three times per item (~0.2 us each).
_SUCCESS_COLUMNS = tuple(c for c in _RESULT_COLUMNS if c not in _FAILURE_COLUMNS)
# An item's result, in _SUCCESS_COLUMNS' order after its seq: the values
# read in C (an Enum's `value` is a Python property; `_value_` is where it
# keeps it).
_success_row = attrgetter("seq", "status._value_", "attempt", "channel_reference", "version")
_seq = attrgetter("seq")
_failure = attrgetter("failure")


@functools.cache
def _update_sql(rows: int, columns: tuple[str, ...], guarded: bool,
                nulled: tuple[str, ...] = ()) -> str:
    row = f"({in_list(1 + len(columns))})"
    sets = [f"{c} = state.{c}" for c in columns] + [f"{c} = NULL" for c in nulled]
    return (f"WITH state (seq, {', '.join(columns)}) AS (VALUES {', '.join([row] * rows)}) "
            f"{_OR_ROLLBACK} {', '.join(sets)} "
            f"FROM state WHERE batch_items.{OF_BATCH} AND batch_items.seq = state.seq"
            + (" AND batch_items.status = ?" if guarded else ""))


def _save(db: sqlite3.Connection, batch_uid: str, chunk: Sequence[BatchItem], params: list,
          columns: tuple[str, ...], was: str | None, nulled: tuple[str, ...] = ()) -> None:
    """One chunk's UPDATE, its items counted (sqlite/batch_item_counts.py):
    `was` is the status they all should have before it, if known; `nulled`
    the columns it sets NULL for every item."""
    seqs = list(map(_seq, chunk))
    rows = padded_rows(len(chunk))
    params = padded(params, len(params) // len(chunk))

    def plain() -> None:
        db.execute(_update_sql(rows, columns, False, nulled), [*params, batch_uid])

    if was is None:
        batch_item_counts.counted(db, batch_uid, seqs, plain)
        return

    def guarded() -> int:
        # Rows changed, from total_changes: Python's sqlite3 gives no
        # rowcount for a statement that starts with WITH (-1).
        before = db.total_changes
        db.execute(_update_sql(rows, columns, True, nulled), [*params, batch_uid, was])
        return db.total_changes - before

    batch_item_counts.moved_from(db, batch_uid, seqs, was, status_counts(chunk),
                                 guarded, plain)


def save_states(db: sqlite3.Connection, batch_uid: str, items: list[BatchItem],
                was: str | None = None) -> None:
    """Each item's own state: per chunk, one UPDATE joining the items' rows
    (a VALUES table) to batch_items by seq. `was`: every item's status as
    stored, if known (the cheaper count)."""
    for chunk in chunks(items):
        params = []
        for i in chunk:
            params += item_state_row(i)
            params.append(i.version)
        _save(db, batch_uid, chunk, params, _STATE_COLUMNS, was)


def save_results(db: sqlite3.Connection, batch_uid: str, items: list[BatchItem]) -> None:
    """save_states for the items of a group just charged, which keep the
    group_no mark_group_processing stored (and its status PROCESSING, unless
    something settled them meanwhile)."""
    for chunk in group_chunks(items):
        if every_item(_failure, None, chunk):
            params = list(chain.from_iterable(map(_success_row, chunk)))
            _save(db, batch_uid, chunk, params, _SUCCESS_COLUMNS, "PROCESSING", _FAILURE_COLUMNS)
            continue
        params = []
        for i in chunk:
            params += (i.seq, i.status.value, i.attempt, i.channel_reference,
                       *failure_columns(i.failure), i.version)
        _save(db, batch_uid, chunk, params, _RESULT_COLUMNS, "PROCESSING")


def mark_processing(db: sqlite3.Connection, batch_uid: str, seqs: list[int],
                    group_no: int | None = None) -> None:
    """The items `seqs` PROCESSING (and in group `group_no`, if given): their
    group starts. Counted as moved from RECEIVED, what they were stored as
    (else item by item: sqlite/batch_item_counts.py)."""
    group_set = "" if group_no is None else ", group_no = ?"
    group_param = () if group_no is None else (group_no,)
    # A group of a batch of one key (a payroll in one currency), or of one
    # sent in key order, is a run of consecutive items: n distinct seqs from
    # lo to lo + n - 1 are that range and nothing else (seq is the item's key
    # in its batch), so one range statement marks them, without binding each
    # seq nor the ephemeral index SQLite builds for an IN list (writer bench:
    # 2.6 -> 1.8 µs an item; a one-currency batch: server CPU per item 0.959).
    runs = ([(seqs, "BETWEEN ? AND ?", (min(seqs), max(seqs)))]
            if seqs and max(seqs) - min(seqs) + 1 == len(seqs) == len(set(seqs))
            else [(chunk, f"IN ({in_list(padded_rows(len(chunk)))})", padded(chunk))
                  for chunk in group_chunks(seqs)])
    for marked, where_seq, seq_params in runs:
        sql = (f"{_OR_ROLLBACK} status = 'PROCESSING'{group_set} "
               f"WHERE {OF_BATCH} AND seq {where_seq}")
        params = (*group_param, batch_uid, *seq_params)
        batch_item_counts.moved_from(
            db, batch_uid, marked, "RECEIVED", {"PROCESSING": len(marked)},
            lambda: db.execute(f"{sql} AND status = 'RECEIVED'", params).rowcount,
            lambda: db.execute(sql, params))


def stored_statuses(db: sqlite3.Connection, batch_uid: str,
                    items: list[BatchItem]) -> dict[int, str]:
    """The items' statuses as stored, by seq."""
    found: dict[int, str] = {}
    for chunk in chunks([item.seq for item in items]):
        found.update(db.execute(f"SELECT seq, status FROM batch_items WHERE {OF_BATCH} "
                                f"AND seq IN ({in_list(len(chunk))})", (batch_uid, *chunk)))
    return found


# `group_no <> 0` is the WHERE of the partial index batch_items_by_group
# (migrations/0011, made again in 0014): SQLite uses a partial index only for
# a query that says so.
GROUP_ITEMS_SQL = (f"SELECT {ITEM_COLUMNS} FROM batch_items "
                   f"WHERE {OF_BATCH} AND group_no = ? AND group_no <> 0 ORDER BY seq")


def groups_as_stored(db: sqlite3.Connection, batch_uid: str,
                     group_nos: list[int]) -> list[BatchGroup]:
    """Each group with every item of it, as stored (batch_items_by_group)."""
    groups = []
    for group_no in group_nos:
        key, started_at_us, completed_at_us = db.execute(
            "SELECT group_key, started_at_us, completed_at_us FROM batch_groups "
            "WHERE batch_uid = ? AND group_no = ?", (batch_uid, group_no)).fetchone()
        items = [item_from_row(row) for row in db.execute(GROUP_ITEMS_SQL, (batch_uid, group_no))]
        groups.append(BatchGroup(group_no, key, items, started_at_us, completed_at_us or 0))
    return groups
