"""How a statement names a batch's items on SQLite: by the batch's integer
item_key (migration 0014), found from its uid within the statement itself.

The callers keep passing the uid. The scalar subquery is uncorrelated, so
SQLite evaluates it once per statement (one probe of the batches' uid
index) and then uses the items' indexes on (batch_key, ...) as with any
other value (tests/storage/test_sqlite_batch_indexes.py checks the plans)."""

from __future__ import annotations

_KEY = "(SELECT item_key FROM batches WHERE uid = {})"

# `batch_key = <the key of the batch whose uid is bound here>`.
OF_BATCH = f"batch_key = {_KEY.format('?')}"
# The same, the uid bound by name (:batch_uid).
OF_BATCH_NAMED = f"batch_key = {_KEY.format(':batch_uid')}"
# The key itself, as a value (an INSERT's).
KEY_OF_BATCH = _KEY.format("?")
