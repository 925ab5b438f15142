"""Applies the numbered SQL files in postgres/migrations/, each exactly once,
even when several replicas start at the same moment."""

from __future__ import annotations

from importlib import resources

import asyncpg

from paygrid_server.domain.model import clock

# pg_advisory_xact_lock key: any constant no other user of the database takes.
# (int64 of the ASCII of "paygrid\0".)
MIGRATION_LOCK_KEY = 0x7061796772696400


def migration_scripts() -> list[tuple[str, str]]:
    folder = resources.files("paygrid_server.storage.postgres") / "migrations"
    scripts = sorted((f.name, f.read_text()) for f in folder.iterdir() if f.name.endswith(".sql"))
    assert scripts, "the PostgreSQL migrations ship with the package"
    return scripts


async def migrate(db: asyncpg.Connection) -> list[str]:
    """Brings the schema up to date; returns the versions it applied.

    One transaction for all of them, holding an advisory lock: a replica that
    starts while another migrates waits, then finds the versions applied and
    applies nothing. DDL is transactional in PostgreSQL, so a failing
    migration leaves the schema as it was."""
    done = []
    async with db.transaction():
        # Migrations may rewrite big tables: no per-statement limit here.
        await db.execute("SET LOCAL statement_timeout = 0")
        await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version TEXT PRIMARY KEY, applied_at_us BIGINT NOT NULL)")
        applied = {row["version"] for row in await db.fetch("SELECT version FROM schema_migrations")}
        for version, script in migration_scripts():
            if version in applied:
                continue
            await db.execute(script)
            await db.execute("INSERT INTO schema_migrations VALUES ($1, $2)",
                             version, clock.now_us())
            done.append(version)
    return done
