"""A connection to paygrid's SQLite file, with its settings: the writer's
and the readers' alike."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from paygrid_server.storage.sqlite.none_binding import bind_none_directly

BUSY_TIMEOUT_MS = 5_000
PRAGMAS = (f"busy_timeout = {BUSY_TIMEOUT_MS}", "journal_mode = WAL", "synchronous = FULL",
           "foreign_keys = ON")

# STRICT tables (3.37) and UPDATE ... FROM (3.33) are used.
MIN_SQLITE_VERSION = (3, 37, 0)


class SqliteTooOld(RuntimeError):
    pass


def connect(path: Path) -> sqlite3.Connection:
    """A connection with paygrid's pragmas; readers use the same settings."""
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        raise SqliteTooOld(
            f"paygrid needs SQLite >= {'.'.join(map(str, MIN_SQLITE_VERSION))}; this Python's "
            f"sqlite3 module has {sqlite3.sqlite_version}")
    bind_none_directly()
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    for pragma in PRAGMAS:
        db.execute(f"PRAGMA {pragma}")
    return db
