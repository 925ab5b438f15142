"""None bound as NULL with one lookup instead of three.

Python's sqlite3 binds an exact int, float or str as it is, but asks its
adapters about any other parameter, None included: a failed look-up of
(type, protocol) in its adapter table, then of `__adapt__` and
`__conform__`, about 0.2 us per None on this machine. A batch item binds
four Nones when stored (no requested_at_us, no failure) and three when its
result is (no failure): ~1.5 us of the writer's time per item. An adapter
registered for NoneType is found at the first look-up and hands back the
same None, which sqlite3 binds as NULL, as before. The table is the sqlite3
module's (process-wide): registering again only replaces the entry.
"""

from __future__ import annotations

import sqlite3


def _same(value: None) -> None:
    return value


def bind_none_directly() -> None:
    sqlite3.register_adapter(type(None), _same)
