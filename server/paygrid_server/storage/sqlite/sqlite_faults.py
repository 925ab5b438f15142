"""SQLite errors that say the storage, not a unit's own SQL, failed (a full
or read-only disk, an I/O error, the lock held too long), as the
StorageUnavailable the services answer with a clear status."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from paygrid_server.domain.ports.storage_errors import StorageFault, StorageUnavailable


# Primary result codes that say the storage, not the unit's own SQL, failed.
_FAULTS_BY_CODE = {
    sqlite3.SQLITE_FULL: StorageFault.DISK_FULL,
    sqlite3.SQLITE_READONLY: StorageFault.READ_ONLY,
    sqlite3.SQLITE_IOERR: StorageFault.IO_ERROR,
    sqlite3.SQLITE_CANTOPEN: StorageFault.IO_ERROR,
    sqlite3.SQLITE_BUSY: StorageFault.BUSY,
}


def _writable(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_WRONLY))
    except FileNotFoundError:
        return True  # a -wal not created yet: SQLite would create it
    except OSError:  # EROFS, EPERM (immutable, even for root), EACCES
        return False
    return True


def as_storage_error(error: BaseException, path: Path) -> BaseException:
    """A storage fault as StorageUnavailable (a clear status for the caller);
    any other error unchanged. Only ever applied to a unit that was rolled
    back whole, which is what StorageUnavailable promises."""
    code = getattr(error, "sqlite_errorcode", None)
    if not isinstance(error, sqlite3.Error) or code is None:
        return error
    fault = _FAULTS_BY_CODE.get(code & 0xFF)  # extended codes keep the primary in the low byte
    if fault is None:
        return error
    # A file that became read-only under an open connection (a file system
    # remounted read-only, an immutable file) fails its writes with EROFS or
    # EPERM, which SQLite reports as a plain I/O error: say what it is.
    if fault is StorageFault.IO_ERROR and not all(
            _writable(p) for p in (path, path.with_name(path.name + "-wal"))):
        fault = StorageFault.READ_ONLY
    return StorageUnavailable(fault, f"{error.sqlite_errorname}: {error}")
