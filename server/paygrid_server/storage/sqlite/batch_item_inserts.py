"""New batch items into SQLite, a chunk per INSERT: the statement and its
parameters, built on the writer thread for every item of every batch.

Nearly every item is stored as it arrived: RECEIVED, first attempt, no
group, no result. A chunk of only such items is inserted by a statement
that spells those seven columns as SQL literals, so each item binds 11
parameters instead of 18 (binding is paid per parameter: 5.9 -> 4.7 µs
per item, statement included, micro-benched). A chunk holding any other
item (one rejected at intake) binds every column. Both store the same
values (tests/storage/test_sqlite_batch_item_rows_stored.py)."""

from __future__ import annotations

import functools
import sqlite3
from operator import attrgetter
from typing import Sequence

from paygrid_server.domain.model.batch import BatchItem, BatchItemStatus
from paygrid_server.storage.batch_rows import STORED_ITEM_COLUMNS, every_item, item_insert_row
from paygrid_server.storage.sqlite.batch_item_rows import in_list

# What an item holds before anything happens to it (BatchItem's defaults),
# as read from it and as its state columns are spelled in SQL (no failure:
# failure_reason, failure_message and failure_decline_code all NULL).
_state = attrgetter("status", "attempt", "group_no", "channel_reference", "failure")
_AS_ARRIVED = (BatchItemStatus.RECEIVED, 1, 0, "", None)
_STATE_COLUMNS = ("status, attempt, group_no, channel_reference, failure_reason, "
                  "failure_message, failure_decline_code")
_AS_ARRIVED_SQL = "'RECEIVED', 1, 0, '', NULL, NULL, NULL"

# What differs from item to item, in the order of _content's values, then
# what is the same for the whole chunk.
_CONTENT_COLUMNS = ("seq, reference, payee, currency, amount_minor, requested_channel, "
                    "requested_at_us, channel, batch_uid, submission")
_content = attrgetter("seq", "reference", "payee", "amount.currency", "amount.amount_minor",
                      "requested_channel", "requested_at_us", "channel")
_ALL_COLUMNS = f"{STORED_ITEM_COLUMNS}, batch_uid, submission"


@functools.cache
def _as_arrived_sql(rows: int) -> str:
    row = f"({in_list(_CONTENT_COLUMNS.count(',') + 1)}, {_AS_ARRIVED_SQL})"
    return (f"INSERT INTO batch_items ({_CONTENT_COLUMNS}, {_STATE_COLUMNS}) "
            f"VALUES {', '.join([row] * rows)}")


@functools.cache
def _any_state_sql(rows: int) -> str:
    row = f"({in_list(_ALL_COLUMNS.count(',') + 1)})"
    return f"INSERT INTO batch_items ({_ALL_COLUMNS}) VALUES {', '.join([row] * rows)}"


def insert_chunk(db: sqlite3.Connection, batch_uid: str, submission: int,
                 chunk: Sequence[BatchItem]) -> None:
    """One INSERT of the new items `chunk` (at most _CHUNK_ROWS of them)."""
    if not every_item(_state, _AS_ARRIVED, chunk):
        params = []
        for item in chunk:
            params += item_insert_row(item)
            params += (batch_uid, submission)
        db.execute(_any_state_sql(len(chunk)), params)
        return
    # The values read in C (attrgetter), a list grown in place: the
    # cheapest way found to a flat parameter list.
    params = []
    for seq, reference, payee, currency, amount_minor, requested_channel, requested_at_us, \
            channel in map(_content, chunk):
        params += (seq, reference, payee, currency, amount_minor, requested_channel,
                   requested_at_us, channel, batch_uid, submission)
    db.execute(_as_arrived_sql(len(chunk)), params)
