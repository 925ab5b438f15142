"""The group queue of a lone server on SQLite: groups in memory
(storage/single_process_group_queue.py), on a file that workers sharing it
(`serve --workers N`, storage/sqlite/group_queue.py) may have used before."""

from __future__ import annotations

import sqlite3

from paygrid_server.storage.single_process_group_queue import SingleProcessGroupQueue
from paygrid_server.storage.sqlite.batch_item_key import OF_BATCH
from paygrid_server.storage.sqlite.batch_store import SqliteBatchStore
from paygrid_server.storage.sqlite.database import SqliteDatabase


class LoneServerGroupQueue(SingleProcessGroupQueue):
    """A lone server's groups in memory, on a file that workers may have
    used before: a batch's groups they left unfinished (QUEUED or LEASED)
    would never be claimed here, and their items not yet charged (RECEIVED,
    but in a group) never grouped again. So before the batch's submission
    takes items, they go back to how a lone server's crash leaves them:
    such groups done (never completed), their RECEIVED items in no group;
    what is PROCESSING is settled by the submission's resume, as ever.
    A group's results and the batch's next group's mark share one
    transaction (marked ahead: see the base class)."""

    def __init__(self, store: SqliteBatchStore, database: SqliteDatabase) -> None:
        super().__init__(store, store.save_group_results_then_mark)
        self._reader = database.reader
        self._database = database

    async def acquire_submission(self, batch_uid: str, owner: str, lease_ms: int) -> bool:
        if await self._reader.execute_fetchall(
                "SELECT 1 FROM batch_groups WHERE batch_uid = ? AND status <> 'DONE' LIMIT 1",
                (batch_uid,)):
            await self._database.write(lambda db: _return_worker_groups(db, batch_uid))
        return True


def _return_worker_groups(db: sqlite3.Connection, batch_uid: str) -> None:
    db.execute(f"UPDATE batch_items SET group_no = 0 WHERE {OF_BATCH} AND status = 'RECEIVED' "
               "AND group_no IN (SELECT group_no FROM batch_groups WHERE batch_uid = ? "
               "AND status <> 'DONE')", (batch_uid, batch_uid))
    db.execute("UPDATE batch_groups SET status = 'DONE', lease_owner = NULL, "
               "lease_expires_at_us = 0 WHERE batch_uid = ? AND status <> 'DONE'", (batch_uid,))
