"""Storage, one folder per engine (sqlite/, postgres/), each implementing the
domain's ports; what both engines share lives here: the rows <-> objects
mapping, the in-memory group queue (one process), the database lock."""

from __future__ import annotations

from paygrid_server.storage.database import Database
from paygrid_server.storage.database_lock import DatabaseLock, DatabaseLocked
from paygrid_server.storage.single_process_group_queue import SingleProcessGroupQueue

__all__ = ["Database", "DatabaseLock", "DatabaseLocked", "SingleProcessGroupQueue"]
