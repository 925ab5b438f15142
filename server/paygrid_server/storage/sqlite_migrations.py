"""Applies the numbered SQL files in migrations/sqlite/, each exactly once."""

from __future__ import annotations

from importlib import resources

import aiosqlite

from paygrid_server.domain import clock


def migration_scripts() -> list[tuple[str, str]]:
    folder = resources.files("paygrid_server.storage") / "migrations" / "sqlite"
    scripts = sorted((f.name, f.read_text()) for f in folder.iterdir() if f.name.endswith(".sql"))
    assert scripts, "the SQLite migrations ship with the package"
    return scripts


async def migrate(db: aiosqlite.Connection) -> list[str]:
    """Brings the schema up to date; returns the versions it applied."""
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version TEXT PRIMARY KEY, applied_at_us INTEGER NOT NULL) STRICT")
    async with db.execute("SELECT version FROM schema_migrations") as cursor:
        applied = {row[0] async for row in cursor}
    done = []
    # Rebuilding a table (the only way SQLite changes some constraints) needs
    # foreign keys off; each migration checks them itself before it commits.
    await db.execute("PRAGMA foreign_keys = OFF")
    try:
        for version, script in migration_scripts():
            if version in applied:
                continue
            # One script per transaction: a migration applies whole or not at all.
            await db.executescript(
                f"BEGIN IMMEDIATE;\n{script}\n"
                f"INSERT INTO schema_migrations VALUES ('{version}', {clock.now_us()});")
            async with db.execute("PRAGMA foreign_key_check") as cursor:
                dangling = await cursor.fetchall()
            if dangling:
                await db.execute("ROLLBACK")
                raise RuntimeError(f"migration {version} leaves dangling references: "
                                   f"{[tuple(row) for row in dangling[:5]]}")
            await db.execute("COMMIT")
            done.append(version)
    finally:
        await db.execute("PRAGMA foreign_keys = ON")
    return done
