"""Each batch's items counted by status (batch_item_counts, migrations/0012),
kept exactly by the statement that stores or moves items, in its
transaction: the count of a status is always what counting the batch's
items would give. Every write of batch_items.status goes through here.

The hot writes (a group's mark, its results) know what their items were:
they run their UPDATE guarded by that status and count it from the number
of rows it changed. When that is not all the rows (a settled item, a
takeover), the plain UPDATE follows and the items are counted as stored
before and after it (see moved_from)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Callable, Mapping, Sequence

import aiosqlite

from paygrid_server.domain.model.batch import BatchCounts, BatchItem, BatchItemStatus
from paygrid_server.storage.batch_rows import counts_from_rows, item_status
from paygrid_server.storage.sqlite.batch_item_key import OF_BATCH

# batch_item_counts' columns, one per status.
STATUSES = ("RECEIVED", "PROCESSING", "SUCCEEDED", "FAILED", "UNKNOWN", "REJECTED")
_ADD_SQL = ("UPDATE batch_item_counts SET "
            + ", ".join(f"{s.lower()} = {s.lower()} + ?" for s in STATUSES)
            + " WHERE batch_uid = ?")
_COLUMNS = ", ".join(s.lower() for s in STATUSES)
_READ_SQL = f"SELECT {_COLUMNS} FROM batch_item_counts WHERE batch_uid = ?"


# Each status with its value, read once: an Enum's `value` is a Python property.
_STATUS_VALUES = tuple((status, status.value) for status in BatchItemStatus)


def status_counts(items: Sequence[BatchItem]) -> dict[str, int]:
    """The items counted by status: a list.count per status, in C (a
    Counter of each item's status.value runs an Enum property per item)."""
    statuses = list(map(item_status, items))
    return {value: statuses.count(status) for status, value in _STATUS_VALUES}


def create(db: sqlite3.Connection, batch_uid: str) -> None:
    """A new batch's row: no items yet."""
    db.execute("INSERT INTO batch_item_counts (batch_uid) VALUES (?)", (batch_uid,))


def add(db: sqlite3.Connection, batch_uid: str, change: Mapping[str, int]) -> None:
    if any(change.values()):
        db.execute(_ADD_SQL, (*(change.get(s, 0) for s in STATUSES), batch_uid))


def by_status(db: sqlite3.Connection, batch_uid: str) -> dict[str, int]:
    row = db.execute(_READ_SQL, (batch_uid,)).fetchone()
    return dict(zip(STATUSES, row)) if row else {}


async def read(reader: aiosqlite.Connection, batch_uid: str) -> BatchCounts:
    """The counts as GetBatch reports them, with the batch's rejections never
    stored as items, in one read (one snapshot)."""
    rows = await reader.execute_fetchall(
        f"SELECT {_COLUMNS}, b.unstored_rejections FROM batches b "
        "JOIN batch_item_counts c ON c.batch_uid = b.uid WHERE b.uid = ?", (batch_uid,))
    if not rows:
        return counts_from_rows([], 0)
    *counts, unstored_rejections = rows[0]
    return counts_from_rows(list(zip(STATUSES, counts)), unstored_rejections)


def _stored(db: sqlite3.Connection, batch_uid: str, seqs: Sequence[int]) -> Counter:
    """The statuses of the items `seqs` as stored now."""
    found: Counter = Counter()
    for start in range(0, len(seqs), 256):
        chunk = seqs[start:start + 256]
        found.update(dict(db.execute(
            f"SELECT status, count(*) FROM batch_items WHERE {OF_BATCH} "
            f"AND seq IN ({', '.join('?' * len(chunk))}) GROUP BY status", (batch_uid, *chunk))))
    return found


def counted(db: sqlite3.Connection, batch_uid: str, seqs: Sequence[int],
            update: Callable[[], object]) -> None:
    """update() moves any of the items `seqs` to any status: counted as the
    items are stored before and after it."""
    distinct = list(dict.fromkeys(seqs))
    before = _stored(db, batch_uid, distinct)
    update()
    after = _stored(db, batch_uid, distinct)
    add(db, batch_uid, {s: after[s] - before[s] for s in STATUSES})


def moved_from(db: sqlite3.Connection, batch_uid: str, seqs: Sequence[int], was: str,
               to: Mapping[str, int], guarded: Callable[[], int],
               update: Callable[[], object]) -> None:
    """guarded(): the UPDATE of the items `seqs` with `AND status = was`,
    returning its rowcount; `to`: their statuses after it, counted (a
    status counted 0 is none of them);
    update(): the same UPDATE unguarded, setting the same values. When
    every item was `was`, that is the change. Else, with one status in `to`,
    the rows guarded() moved went from `was` to it, and update() moves the
    rest (and sets the moved ones to what they hold), counted item by item.
    With several, which rows moved is not known: guarded() is undone
    (a savepoint) and update() counted item by item.

    The savepoint only where it can be needed: a savepoint keeps a copy of
    every page its statements change (as many pages as the WAL gets)."""
    to_statuses = [status for status, count in to.items() if count]
    single = len(to_statuses) == 1
    if not single:
        db.execute("SAVEPOINT counted")
    moved = guarded()
    if moved == len(seqs):
        if not single:
            db.execute("RELEASE counted")
        change = dict(to)
        change[was] = change.get(was, 0) - len(seqs)
        add(db, batch_uid, change)
        return
    if single:
        (status,) = to_statuses
        add(db, batch_uid, {was: -moved, status: moved} if status != was else {})
    else:
        db.execute("ROLLBACK TO counted")
        db.execute("RELEASE counted")
    counted(db, batch_uid, seqs, update)
