"""PostgreSQL storage: pool, migrations, payment and batch stores, group queue
shared by replicas."""

from __future__ import annotations

from paygrid_server.storage.postgres.batch_sql import (
    chunks,
    columns,
    by_key_lookups,
    save_states,
    rows_touched,
    mark_items_processing,
)
from paygrid_server.storage.postgres.batch_store import (
    PostgresBatchStore,
)
from paygrid_server.storage.postgres.database import (
    PostgresLimits,
    PostgresUnavailable,
    as_storage_error,
    redacted_dsn,
    PostgresDatabase,
)
from paygrid_server.storage.postgres.group_queue import (
    PostgresGroupQueue,
)
from paygrid_server.storage.postgres.payment_store import (
    PostgresPaymentStore,
)
from paygrid_server.storage.postgres.schema_migrations import (
    migration_scripts,
    migrate,
)

__all__ = [
    "PostgresBatchStore",
    "PostgresDatabase",
    "PostgresGroupQueue",
    "PostgresLimits",
    "PostgresPaymentStore",
    "PostgresUnavailable",
    "as_storage_error",
    "by_key_lookups",
    "chunks",
    "columns",
    "mark_items_processing",
    "migrate",
    "migration_scripts",
    "redacted_dsn",
    "rows_touched",
    "save_states",
]
