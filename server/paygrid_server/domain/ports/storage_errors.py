"""What a store raises when the storage itself, not the request, is at fault.

A DomainError, so every entry point maps it the one way (UNAVAILABLE, see
transport/status_errors.py) instead of letting an engine's exception become
UNKNOWN. It is raised only for a unit of work that was rolled back whole:
nothing of it is stored, and retrying with the same idempotency key is safe.
Any engine (SQLite, PostgreSQL) may raise it.
"""

from __future__ import annotations

from enum import Enum

from paygrid_server.domain.model.errors import DomainError


class StorageFault(Enum):
    DISK_FULL = "DISK_FULL"
    READ_ONLY = "READ_ONLY"
    IO_ERROR = "IO_ERROR"
    BUSY = "BUSY"  # another process held the write lock past the busy timeout
    UNREACHABLE = "UNREACHABLE"  # a database server (PostgreSQL) that cannot be reached
    CLOSED = "CLOSED"  # this server closed its database: it is shutting down


_DESCRIPTIONS = {
    StorageFault.DISK_FULL: "the database's disk is full",
    StorageFault.READ_ONLY: "the database is read-only",
    StorageFault.IO_ERROR: "the database's disk failed a write",
    StorageFault.BUSY: "the database is locked by another process",
    StorageFault.UNREACHABLE: "the database server cannot be reached",
    StorageFault.CLOSED: "this server is shutting down and has closed its database",
}


class StorageUnavailable(DomainError):
    def __init__(self, fault: StorageFault, engine_message: str) -> None:
        self.fault = fault
        super().__init__(
            f"storage unavailable: {_DESCRIPTIONS[fault]} ({engine_message}); nothing of this "
            "request was stored by the failed write; retry later with the same idempotency key "
            "or batch_id (nothing already recorded is charged twice, and a charge whose outcome "
            "could not be written is settled once storage is back)")
