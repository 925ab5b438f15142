"""SQLite's kept counts of batch items by status (batch_item_counts,
migrations/0012) against a full recount of the items, for every batch in a
file: they must never drift, whatever path moved the items."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from paygrid_server.storage.sqlite.batch_item_counts import STATUSES

_RECOUNT = ("SELECT b.uid, " + ", ".join(f"count(i.status = '{s}' OR NULL)" for s in STATUSES)
            + " FROM batches b LEFT JOIN batch_items i ON i.batch_key = b.item_key GROUP BY b.uid")
_KEPT = ("SELECT batch_uid, " + ", ".join(s.lower() for s in STATUSES)
         + " FROM batch_item_counts")


def kept_and_recounted(path: Path) -> tuple[dict, dict]:
    """Both read in one transaction (one snapshot): a server may be
    writing to the file meanwhile."""
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        db.execute("BEGIN")
        return ({row[0]: row[1:] for row in db.execute(_KEPT)},
                {row[0]: row[1:] for row in db.execute(_RECOUNT)})
    finally:
        db.close()


def assert_counts_match_items(path: Path) -> int:
    """Every batch's kept counts equal its items counted now; returns how
    many batches were checked. A file with no schema yet has none."""
    if not Path(path).exists():
        return 0
    with sqlite3.connect(path) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'batch_item_counts'").fetchone():
            return 0
    kept, recounted = kept_and_recounted(path)
    assert kept == recounted, {"kept": kept, "recounted": recounted}
    return len(recounted)
