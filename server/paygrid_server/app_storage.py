"""Part of the composition root: the storage engine `[server] database`
names, opened and migrated, and every store built on it."""

from __future__ import annotations

from dataclasses import dataclass

from paygrid_server import worker_supervisor
from paygrid_server.config import ServerConfig
from paygrid_server.domain.ports.batch_store import BatchStore
from paygrid_server.domain.ports.event_consumers import EventConsumerStore, EventPruner
from paygrid_server.domain.ports.event_log import EventLog
from paygrid_server.domain.ports.group_queue import GroupQueue
from paygrid_server.domain.ports.payment_store import PaymentStore
from paygrid_server.storage.database import Database
from paygrid_server.storage.postgres.batch_store import PostgresBatchStore
from paygrid_server.storage.postgres.database import PostgresDatabase, PostgresLimits
from paygrid_server.storage.postgres.event_consumers import PostgresEventConsumers
from paygrid_server.storage.postgres.event_log import PostgresEventLog
from paygrid_server.storage.postgres.group_queue import PostgresGroupQueue
from paygrid_server.storage.postgres.payment_store import PostgresPaymentStore
from paygrid_server.storage.sqlite.batch_store import SqliteBatchStore
from paygrid_server.storage.sqlite.database import SqliteDatabase
from paygrid_server.storage.sqlite.event_consumers import SqliteEventConsumers
from paygrid_server.storage.sqlite.event_log import SqliteEventLog
from paygrid_server.storage.sqlite.group_queue import SqliteGroupQueue
from paygrid_server.storage.sqlite.lone_server_group_queue import LoneServerGroupQueue
from paygrid_server.storage.sqlite.file_sharing import FileSharing
from paygrid_server.storage.sqlite.payment_store import SqlitePaymentStore
from paygrid_server.transport.event_messages import ProtobufSnapshots


@dataclass(frozen=True)
class Storage:
    """The engine `[server] database` names, migrated, and what is built on it."""
    database: Database
    payments: PaymentStore
    batches: BatchStore
    # Where batch groups wait to be charged: PostgreSQL leases them to any
    # replica; SQLite leases them to workers sharing the file, and a lone
    # server keeps them in memory.
    group_queue: GroupQueue
    # The event log the stores write events to (payloads as the API's
    # messages), consumers' positions and retention's pruning.
    events: EventLog
    consumers: EventConsumerStore
    pruner: EventPruner


async def open_storage(config: ServerConfig) -> Storage:
    snapshots = ProtobufSnapshots()
    if config.postgres_dsn:
        limits = config.postgres
        postgres = await PostgresDatabase.open(config.postgres_dsn, PostgresLimits(
            limits.pool_max_connections, limits.statement_timeout_ms, limits.connect_timeout_ms))
        batch_store = PostgresBatchStore(postgres, snapshots)
        postgres_events = PostgresEventLog(postgres)
        try:
            await postgres_events.start_listening()
        except BaseException:
            await postgres.close()
            raise
        postgres_consumers = PostgresEventConsumers(postgres)
        return Storage(postgres, PostgresPaymentStore(postgres, snapshots), batch_store,
                       PostgresGroupQueue(postgres, batch_store), postgres_events,
                       postgres_consumers, postgres_consumers)
    # A worker of `serve --workers N` shares the file with the others (the
    # supervisor holds its lock and says which worker starts alone): batch
    # groups are leased in it; a lone server keeps them in memory, which
    # costs fewer writes per group (docs/operations/workers.md has figures).
    worker = worker_supervisor.is_worker()
    sharing = FileSharing(workers=worker,
                          alone_at_start=not worker or worker_supervisor.is_first_worker())
    sqlite = await SqliteDatabase.open(config.database_path,
                                       worker_supervisor.inherited_database_lock_fd())
    sqlite_events = SqliteEventLog(sqlite, sharing)
    wake = sqlite_events.signal.notify
    sqlite_batches = SqliteBatchStore(sqlite, snapshots, wake)
    sqlite_consumers = SqliteEventConsumers(sqlite)
    group_queue = (SqliteGroupQueue(sqlite, snapshots, wake, sharing.alone_at_start) if worker
                   else LoneServerGroupQueue(sqlite_batches, sqlite))
    return Storage(sqlite, SqlitePaymentStore(sqlite, snapshots, wake, sharing),
                   sqlite_batches, group_queue, sqlite_events, sqlite_consumers,
                   sqlite_consumers)
