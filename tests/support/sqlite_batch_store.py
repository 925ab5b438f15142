"""A SQLite batch store on a real file, holding one batch whose first
submission has started: where the storage tests of items begin."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import AsyncIterator

from paygrid_server.domain.model.batch import Batch, BatchHeader, BatchStatus
from paygrid_server.storage.sqlite.batch_store import SqliteBatchStore
from paygrid_server.storage.sqlite.database import SqliteDatabase
from paygrid_server.transport.event_messages import ProtobufSnapshots


@contextlib.asynccontextmanager
async def batch_in_submission(path: Path, uid: str,
                              header: BatchHeader) -> AsyncIterator[SqliteBatchStore]:
    """The store, batch `uid` (tenant "dev", header.batch_id) in its first
    submission; the database closed after."""
    database = await SqliteDatabase.open(path)
    try:
        store = SqliteBatchStore(database, ProtobufSnapshots())
        await store.insert_batch(Batch("dev", header.batch_id, uid, header, header.fingerprint(),
                                       BatchStatus.RECEIVING, 0, 1))
        await store.start_submission(uid, header, 1)
        yield store
    finally:
        await database.close()
