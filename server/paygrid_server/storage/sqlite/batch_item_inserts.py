"""New batch items into SQLite, a chunk per INSERT: the statement and its
parameters, built in a write round (sqlite/writer.py) for every item of every batch.

Nearly every item is stored as it arrived: RECEIVED, first attempt, no
group, no result. A chunk of only such items is inserted by a statement
that spells those seven columns as SQL literals, so each item binds 8
parameters instead of 15 (binding is paid per parameter). A chunk holding
any other item (one rejected at intake) binds every column. Both store the
same values (tests/storage/test_sqlite_batch_item_rows_stored.py)."""

from __future__ import annotations

import functools
import sqlite3
from operator import attrgetter
from typing import Sequence

from paygrid_server.domain.model.batch import BatchItem, BatchItemStatus
from paygrid_server.storage.batch_rows import STORED_ITEM_COLUMNS, every_item, item_insert_row
from paygrid_server.storage.sqlite.batch_item_key import KEY_OF_BATCH
from paygrid_server.storage.sqlite.batch_item_rows import in_list

# What an item holds before anything happens to it (BatchItem's defaults),
# as read from it and as its state columns are spelled in SQL (no failure:
# failure_reason, failure_message and failure_decline_code all NULL).
_state = attrgetter("status", "attempt", "group_no", "channel_reference", "failure")
_AS_ARRIVED = (BatchItemStatus.RECEIVED, 1, 0, "", None)
_STATE_COLUMNS = ("status, attempt, group_no, channel_reference, failure_reason, "
                  "failure_message, failure_decline_code")
_AS_ARRIVED_SQL = "'RECEIVED', 1, 0, '', NULL, NULL, NULL"

# What differs from item to item, in the order of _content's values.
_CONTENT_COLUMNS = ("seq, reference, payee, currency, amount_minor, requested_channel, "
                    "requested_at_us, channel")
_content = attrgetter("seq", "reference", "payee", "amount.currency", "amount.amount_minor",
                      "requested_channel", "requested_at_us", "channel")


def _insert_sql(columns: str, rows: int, literals: str = "") -> str:
    """INSERT of `rows` rows of `columns` (then `literals`, the same for every
    row), bound after the batch's uid and the submission, which the whole
    chunk shares: the batch's key is found once for the statement."""
    count = columns.count(",") + 1
    values = ", ".join([f"({in_list(count)})"] * rows)
    picked = ", ".join(f"column{n}" for n in range(1, count + 1))
    return (f"INSERT INTO batch_items (batch_key, submission, {columns}"
            f"{', ' + _STATE_COLUMNS if literals else ''}) "
            f"SELECT {KEY_OF_BATCH}, ?, {picked}{', ' + literals if literals else ''} "
            f"FROM (VALUES {values})")


@functools.cache
def _as_arrived_sql(rows: int) -> str:
    return _insert_sql(_CONTENT_COLUMNS, rows, _AS_ARRIVED_SQL)


@functools.cache
def _any_state_sql(rows: int) -> str:
    return _insert_sql(STORED_ITEM_COLUMNS, rows)


def insert_chunk(db: sqlite3.Connection, batch_uid: str, submission: int,
                 chunk: Sequence[BatchItem]) -> None:
    """One INSERT of the new items `chunk` (at most _CHUNK_ROWS of them)."""
    if not every_item(_state, _AS_ARRIVED, chunk):
        params = [batch_uid, submission]
        for item in chunk:
            params += item_insert_row(item)
        db.execute(_any_state_sql(len(chunk)), params)
        return
    # The values read in C (attrgetter), a list grown in place: the
    # cheapest way found to a flat parameter list.
    params = [batch_uid, submission]
    for seq, reference, payee, currency, amount_minor, requested_channel, requested_at_us, \
            channel in map(_content, chunk):
        params += (seq, reference, payee, currency, amount_minor, requested_channel,
                   requested_at_us, channel)
    db.execute(_as_arrived_sql(len(chunk)), params)
