"""A server's write rounds (storage/sqlite/loop_rounds.py): statements on the
event loop, the COMMIT on the writer's thread, never both at once; a round
that would make the loop wait goes to the thread instead."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from paygrid_server.storage.sqlite.writer import SqliteWriter
from tests.storage.test_sqlite_write_turn import OtherWorkersTurn
from tests.storage.test_sqlite_writer import stored_notes, writer  # noqa: F401 (a fixture)


def noting(note: str, seen: list):
    """A unit inserting `note`, which records the thread it ran on."""
    def work(db: sqlite3.Connection) -> int:
        seen.append((note, threading.get_ident()))
        return db.execute("INSERT INTO t (note) VALUES (?)", (note,)).lastrowid
    return work


def until_without_the_loop(condition, timeout_s: float = 30) -> bool:
    """Polls `condition` while holding the event loop: for what another
    thread is to do without the loop's help."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


class HeldCommits:
    """Holds each COMMIT of a round run on the loop at the thread until let go."""

    def __init__(self, writer: SqliteWriter, monkeypatch: pytest.MonkeyPatch,
                 seen: list) -> None:
        self.reached = threading.Event()
        self.go = threading.Event()
        commit = writer.commit_loop_round

        def held(units, results) -> None:
            self.reached.set()
            self.go.wait(30)
            commit(units, results)
            seen.append(("COMMIT", threading.get_ident()))
        monkeypatch.setattr(writer, "commit_loop_round", held)


async def test_statements_run_on_the_loop_and_answers_wait_for_the_commit(
        writer: SqliteWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list = []
    held = HeldCommits(writer, monkeypatch, seen)
    first = asyncio.ensure_future(writer.unit(noting("first", seen)))
    await asyncio.to_thread(held.reached.wait, 30)  # its round's statements ran; COMMIT held
    assert seen == [("first", threading.get_ident())]  # on the loop's own thread
    assert not first.done()  # nothing is answered before its COMMIT is done
    assert "first" not in stored_notes(tmp_path / "w.sqlite3")

    # A unit added while the thread has the round cannot start another
    # round on the connection: it waits for that COMMIT, then has its own.
    second = asyncio.ensure_future(writer.unit(noting("second", seen)))
    commits_before = writer.commits
    held.go.set()
    await asyncio.gather(first, second)
    assert [note for note, _ in seen] == ["first", "COMMIT", "second", "COMMIT"]
    assert seen[1][1] != threading.get_ident()  # the COMMIT on the writer's thread
    assert writer.commits - commits_before == 2
    assert stored_notes(tmp_path / "w.sqlite3") == {"first", "second"}


async def test_a_round_that_finds_the_file_locked_waits_on_the_thread_not_the_loop(
        writer: SqliteWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = sqlite3.connect(tmp_path / "w.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer, say
    handed = threading.Event()
    run_units = writer.run_units

    def noted(units) -> None:
        handed.set()
        run_units(units)
    monkeypatch.setattr(writer, "run_units", noted)
    seen: list = []
    waiting = asyncio.ensure_future(writer.unit(noting("after the lock", seen)))
    # The loop is free while the unit waits for the lock: this await returns.
    await asyncio.to_thread(handed.wait, 30)
    assert not waiting.done()
    other.execute("COMMIT")
    other.close()
    await waiting
    assert seen[0][1] != threading.get_ident()  # it ran on the writer's thread
    # The next round runs on the loop again.
    await writer.unit(noting("next", seen))
    assert seen[-1] == ("next", threading.get_ident())
    assert stored_notes(tmp_path / "w.sqlite3") == {"after the lock", "next"}


async def test_a_lone_failing_unit_fails_without_running_again(
        writer: SqliteWriter, tmp_path: Path) -> None:
    await writer.unit(noting("taken", []))
    seen: list = []
    with pytest.raises(sqlite3.IntegrityError):
        await writer.unit(noting("taken", seen))  # UNIQUE
    assert len(seen) == 1
    await writer.unit(noting("after", []))  # no transaction left open
    assert stored_notes(tmp_path / "w.sqlite3") == {"taken", "after"}


async def test_units_added_before_the_close_are_answered_by_it(tmp_path: Path) -> None:
    writer = await SqliteWriter.open(tmp_path / "c.sqlite3")
    await writer.alone(lambda db: db.execute("CREATE TABLE t (note TEXT NOT NULL)"))
    units = [asyncio.ensure_future(writer.unit(
        lambda db, i=i: db.execute("INSERT INTO t VALUES (?)", (f"n{i}",)))) for i in range(50)]
    await asyncio.sleep(0)  # each task runs up to its unit's answer: all 50 are added
    await writer.close()
    assert [unit.exception() for unit in units] == [None] * 50
    with sqlite3.connect(tmp_path / "c.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 50


async def test_a_unit_from_another_event_loop_is_refused(writer: SqliteWriter) -> None:
    def from_another_loop() -> BaseException | None:
        try:
            asyncio.run(writer.unit(lambda db: db.execute("SELECT 1")))
        except RuntimeError as error:
            return error
        return None
    refused = await asyncio.to_thread(from_another_loop)
    assert "event loop that opened it" in str(refused)
    await writer.unit(noting("still serving", []))


async def test_a_worker_holds_the_file_s_write_turn_from_its_statements_to_its_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers sharing the file run their statements on the loop too, the turn
    taken there when free, and give it back only once the COMMIT is done."""
    database = tmp_path / "s.sqlite3"
    shared = await SqliteWriter.open(database, shared=True)
    other = OtherWorkersTurn(database)
    seen: list = []
    held = HeldCommits(shared, monkeypatch, seen)
    try:
        await shared.alone(lambda db: db.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, note TEXT NOT NULL UNIQUE)"))
        unit = asyncio.ensure_future(shared.unit(noting("n", seen)))
        await asyncio.to_thread(held.reached.wait, 30)
        assert seen == [("n", threading.get_ident())]  # on the loop's own thread
        assert not other.try_take()  # the turn is the writer's until its COMMIT is done
        held.go.set()
        # The loop is kept busy here (no await): the thread gives the turn back
        # right after the COMMIT, not when the loop gets round to the answer.
        assert until_without_the_loop(other.try_take)
        await unit
        assert stored_notes(database) == {"n"}
    finally:
        held.go.set()
        other.give()
        await shared.close()


async def test_a_commit_that_fails_leaves_only_the_failing_unit_failed(tmp_path: Path) -> None:
    """A deferred foreign key is checked at COMMIT, which runs on the thread:
    the round is rolled back and each unit runs again alone, so only the
    orphan fails; alone in its round, the orphan runs once."""
    writer = await SqliteWriter.open(tmp_path / "f.sqlite3")
    try:
        await writer.alone(lambda db: db.executescript(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
            "CREATE TABLE child (parent_id INTEGER NOT NULL REFERENCES parent (id)"
            " DEFERRABLE INITIALLY DEFERRED);"))
        runs: list[int] = []

        def child_of(parent_id: int, with_parent: bool):
            def work(db: sqlite3.Connection) -> None:
                runs.append(parent_id)
                if with_parent:
                    db.execute("INSERT INTO parent (id) VALUES (?)", (parent_id,))
                db.execute("INSERT INTO child (parent_id) VALUES (?)", (parent_id,))
            return work

        results = await asyncio.gather(
            writer.unit(child_of(1, True)), writer.unit(child_of(99, False)),
            writer.unit(child_of(2, True)), return_exceptions=True)
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], sqlite3.IntegrityError)
        assert sorted(runs) == [1, 1, 2, 2, 99, 99]  # the round, then each alone
        runs.clear()
        with pytest.raises(sqlite3.IntegrityError):
            await writer.unit(child_of(98, False))
        assert runs == [98]
        with sqlite3.connect(tmp_path / "f.sqlite3") as db:
            assert db.execute("SELECT parent_id FROM child ORDER BY 1").fetchall() == [(1,), (2,)]
    finally:
        await writer.close()


async def test_a_lone_unit_that_finds_the_file_locked_on_the_loop_waits_on_the_thread(
        writer: SqliteWriter, tmp_path: Path) -> None:
    """The loop's busy timeout is 0: SQLITE_BUSY there is not the unit's
    failure but a lock the thread's busy_timeout waits out."""
    seen: list = []

    def locked_once(db: sqlite3.Connection) -> None:
        seen.append(threading.get_ident())
        if len(seen) == 1:
            busy = sqlite3.OperationalError("database is locked")
            busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
            raise busy
        db.execute("INSERT INTO t (note) VALUES ('after the lock')")

    await writer.unit(locked_once)
    assert seen[0] == threading.get_ident() and seen[1] != threading.get_ident()
    assert stored_notes(tmp_path / "w.sqlite3") == {"after the lock"}
