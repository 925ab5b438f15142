"""SQLite storage: one writer task (group commit), migrations, payment and batch stores."""

from __future__ import annotations

from paygrid_server.storage.sqlite.batch_store import (
    SqliteBatchStore,
)
from paygrid_server.storage.sqlite.database import (
    SqliteDatabase,
)
from paygrid_server.storage.sqlite.payment_store import (
    SqlitePaymentStore,
)
from paygrid_server.storage.sqlite.schema_migrations import (
    migration_scripts,
    migrate,
)
from paygrid_server.storage.sqlite.sqlite_faults import (
    as_storage_error,
)
from paygrid_server.storage.sqlite.connection import (
    SqliteTooOld,
    connect,
)
from paygrid_server.storage.sqlite.writer import (
    SqliteWriter,
)

__all__ = [
    "SqliteBatchStore",
    "SqliteDatabase",
    "SqlitePaymentStore",
    "SqliteTooOld",
    "SqliteWriter",
    "as_storage_error",
    "connect",
    "migrate",
    "migration_scripts",
]
