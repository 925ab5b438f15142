"""The SQLite writer: concurrent units of work share commits, a failing unit
fails alone, and a unit's caller resumes only once its work is on disk."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from paygrid_server.storage.sqlite.writer import SqliteWriter


class Refused(Exception):
    pass


@pytest.fixture
async def writer(tmp_path: Path):
    writer = await SqliteWriter.open(tmp_path / "w.sqlite3")
    await writer.alone(lambda db: db.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, note TEXT NOT NULL UNIQUE)"))
    yield writer
    await writer.close()


def insert(note: str, then_fail: bool = False):
    def work(db: sqlite3.Connection) -> int:
        row_id = db.execute("INSERT INTO t (note) VALUES (?)", (note,)).lastrowid
        if then_fail:
            raise Refused(note)  # after a write: the unit must leave nothing behind
        return row_id
    return work


def stored_notes(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:  # another connection: sees only committed rows
        return {note for (note,) in db.execute("SELECT note FROM t")}


async def test_concurrent_units_share_commits_and_are_durable_when_awaited(
        writer: SqliteWriter, tmp_path: Path) -> None:
    commits_before = writer.commits
    ids = await asyncio.gather(*(writer.unit(insert(f"n{i}")) for i in range(200)))
    assert len(set(ids)) == 200
    assert stored_notes(tmp_path / "w.sqlite3") == {f"n{i}" for i in range(200)}
    assert writer.commits - commits_before < 200 / 4  # grouped, not one commit per unit


async def test_a_failing_unit_fails_alone_and_leaves_nothing(
        writer: SqliteWriter, tmp_path: Path) -> None:
    results = await asyncio.gather(
        *(writer.unit(insert(f"ok{i}")) for i in range(20)),
        writer.unit(insert("bad", then_fail=True)),
        writer.unit(insert("ok0")),  # violates UNIQUE: an SQLite error, also alone
        *(writer.unit(insert(f"ok{i}")) for i in range(20, 40)),
        return_exceptions=True)
    assert isinstance(results[20], Refused)
    assert isinstance(results[21], sqlite3.IntegrityError)
    assert not any(isinstance(r, Exception) for r in results[:20] + results[22:])
    assert stored_notes(tmp_path / "w.sqlite3") == {f"ok{i}" for i in range(40)}


def insert_then_collide(note: str):
    """A unit whose last statement, `OR ROLLBACK` (the batch item UPDATEs'
    clause), fails: SQLite ends the whole transaction itself."""
    def work(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t (note) VALUES (?)", (note,))
        db.execute("INSERT OR ROLLBACK INTO t (note) VALUES ('ok0'), (?)", (note + "+",))
    return work


async def test_a_unit_whose_statement_rolls_the_transaction_back_fails_alone(
        writer: SqliteWriter, tmp_path: Path) -> None:
    results = await asyncio.gather(
        *(writer.unit(insert(f"ok{i}")) for i in range(20)),
        writer.unit(insert_then_collide("bad")),
        *(writer.unit(insert(f"ok{i}")) for i in range(20, 40)),
        return_exceptions=True)
    assert isinstance(results[20], sqlite3.IntegrityError)
    assert not any(isinstance(r, Exception) for r in results[:20] + results[21:])
    # Nothing of the failing unit, everything of the others, and the writer
    # goes on in transactions of its own (no statement left in autocommit).
    assert stored_notes(tmp_path / "w.sqlite3") == {f"ok{i}" for i in range(40)}
    await writer.unit(insert("after"))
    assert "after" in stored_notes(tmp_path / "w.sqlite3")


async def test_a_cancelled_caller_does_not_stop_the_others(
        writer: SqliteWriter, tmp_path: Path) -> None:
    gone = asyncio.ensure_future(writer.unit(insert("gone")))
    stays = asyncio.ensure_future(writer.unit(insert("stays")))
    gone.cancel()
    await stays
    # Handed over before the cancel, the unit still ran: cancelling a caller
    # never half-applies its work.
    await writer.unit(insert("after"))
    assert {"stays", "after"} <= stored_notes(tmp_path / "w.sqlite3")


async def test_an_sqlite_too_old_for_the_schema_is_refused_at_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    with pytest.raises(RuntimeError, match=r"SQLite >= 3\.37\.0.*3\.31\.1"):
        await SqliteWriter.open(tmp_path / "old.sqlite3")
    assert not (tmp_path / "old.sqlite3").exists()


async def test_a_write_after_close_gets_a_storage_fault_instead_of_waiting_for_ever(
        tmp_path: Path) -> None:
    """Work cut off by a shutdown (past its grace) writes after the database
    closed: it must end with a clear fault, not hang the process's exit."""
    from paygrid_server.domain.ports.storage_errors import StorageFault, StorageUnavailable

    closed = await SqliteWriter.open(tmp_path / "closed.sqlite3")
    await closed.close()
    with pytest.raises(StorageUnavailable) as refused:
        await asyncio.wait_for(closed.unit(lambda db: db.execute("SELECT 1")), 5)
    assert refused.value.fault.value == "CLOSED"
    assert refused.value.fault is StorageFault.CLOSED
