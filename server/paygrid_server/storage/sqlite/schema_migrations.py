"""Applies the numbered SQL files in sqlite/migrations/, each exactly once."""

from __future__ import annotations

import sqlite3
from importlib import resources

from paygrid_server.domain.model import clock


def migration_scripts() -> list[tuple[str, str]]:
    folder = resources.files("paygrid_server.storage.sqlite") / "migrations"
    scripts = sorted((f.name, f.read_text()) for f in folder.iterdir() if f.name.endswith(".sql"))
    assert scripts, "the SQLite migrations ship with the package"
    return scripts


def migrate(db: sqlite3.Connection) -> list[str]:
    """Brings the schema up to date; returns the versions it applied."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version TEXT PRIMARY KEY, applied_at_us INTEGER NOT NULL) STRICT")
    applied = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
    done = []
    # Rebuilding a table (the only way SQLite changes some constraints) needs
    # foreign keys off; each migration checks them itself before it commits.
    db.execute("PRAGMA foreign_keys = OFF")
    try:
        for version, script in migration_scripts():
            if version in applied:
                continue
            # One script per transaction: a migration applies whole or not at all.
            db.executescript(
                f"BEGIN IMMEDIATE;\n{script}\n"
                f"INSERT INTO schema_migrations VALUES ('{version}', {clock.now_us()});")
            dangling = db.execute("PRAGMA foreign_key_check").fetchall()
            if dangling:
                db.execute("ROLLBACK")
                raise RuntimeError(f"migration {version} leaves dangling references: "
                                   f"{[tuple(row) for row in dangling[:5]]}")
            db.execute("COMMIT")
            done.append(version)
    finally:
        db.execute("PRAGMA foreign_keys = ON")
    return done
