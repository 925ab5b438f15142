"""PostgreSQL storage: pool, migrations, payment and batch stores, group queue
shared by replicas."""

from __future__ import annotations

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
from paygrid_server.storage.postgres.migrate import (
    migration_scripts,
    migrate,
)
from paygrid_server.storage.postgres.payment_store import (
    PostgresPaymentStore,
)

__all__ = [
    "PostgresBatchStore",
    "PostgresDatabase",
    "PostgresLimits",
    "PostgresPaymentStore",
    "PostgresUnavailable",
    "as_storage_error",
    "migrate",
    "migration_scripts",
    "redacted_dsn",
]
