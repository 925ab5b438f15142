"""What the composition root holds of a storage engine, whichever it is
(sqlite/database.py, postgres/database.py): each opens itself, migrated, in
its own way (a file path, a DSN); app.py only has to close it."""

from __future__ import annotations

from typing import Protocol


class Database(Protocol):
    async def close(self) -> None:
        """Waits for writes in progress, then releases the file or connections."""
        ...
