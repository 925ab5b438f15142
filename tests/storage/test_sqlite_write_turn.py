"""Workers' writers take turns at a shared SQLite file by an flock
(storage/sqlite/write_turn.py): a writer waits for its turn in the kernel,
on its thread, before its loop collects what is queued, so what was queued
while another worker wrote goes in one commit; a lone server's writer takes
no turn."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from paygrid_server.storage.sqlite.write_turn import write_turn_path
from paygrid_server.storage.sqlite.writer import SqliteWriter

WAIT_S = 10


async def open_writer(path: Path, shared: bool) -> SqliteWriter:
    writer = await SqliteWriter.open(path, shared=shared)
    await writer.alone(lambda db: db.execute("CREATE TABLE t (note TEXT NOT NULL)"))
    return writer


def insert(note: str):
    return lambda db: db.execute("INSERT INTO t (note) VALUES (?)", (note,)).lastrowid


def stored_notes(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {note for (note,) in db.execute("SELECT note FROM t")}


class OtherWorkersTurn:
    """The turn as another worker holds it (an open file description of its own)."""

    def __init__(self, database: Path) -> None:
        self.path = write_turn_path(database)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT)

    async def take(self) -> "OtherWorkersTurn":
        """Once free: a writer gives its turn back just after it answers."""
        await until(self.try_take)
        return self

    def try_take(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def someone_waits(self) -> bool:
        """A blocked flock on the turn file (a "->" line of /proc/locks)."""
        inode = os.stat(self.path).st_ino
        return any(fields[1] == "->" and fields[6].rsplit(":", 1)[1] == str(inode)
                   for fields in (line.split() for line in
                                  Path("/proc/locks").read_text().splitlines()))

    def give(self) -> None:
        os.close(self._fd)


async def until(condition) -> None:
    """Polls for a state the test has already brought about."""
    for _ in range(WAIT_S * 1_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("not reached")


async def test_units_queued_while_a_worker_waits_for_its_turn_share_one_commit(
        tmp_path: Path) -> None:
    database = tmp_path / "w.sqlite3"
    writer = await open_writer(database, shared=True)
    other = await OtherWorkersTurn(database).take()
    try:
        threads: set[int] = set()
        turn_free_in_statements: list[bool] = []

        def noted(note: str):
            def work(db: sqlite3.Connection) -> None:
                threads.add(threading.get_ident())
                probe = OtherWorkersTurn(database)
                turn_free_in_statements.append(probe.try_take())
                probe.give()
                insert(note)(db)
            return work

        first = asyncio.ensure_future(writer.unit(noted("first")))
        # The writer's thread waits for the turn; the loop does not (this
        # await returns).
        await until(other.someone_waits)
        rest = [asyncio.ensure_future(writer.unit(noted(f"n{i}"))) for i in range(10)]
        await asyncio.sleep(0)  # each task queues its unit, then awaits it
        assert stored_notes(database) == set() and not first.done() and not threads
        commits_before = writer.commits
        other.give()
        await asyncio.wait_for(asyncio.gather(first, *rest), WAIT_S)
        # One commit for all: the units queued during the wait did not wait
        # for a second turn (taken after collecting, "first" would commit alone).
        assert writer.commits - commits_before == 1
        assert stored_notes(database) == {"first"} | {f"n{i}" for i in range(10)}
        # Their statements ran on the loop once the turn was taken, and the
        # turn the thread waited for was still the writer's then.
        assert threads == {threading.get_ident()}
        assert turn_free_in_statements == [False] * 11
    finally:
        await writer.close()


async def test_a_lone_server_s_writer_takes_no_turn(tmp_path: Path) -> None:
    database = tmp_path / "w.sqlite3"
    writer = await open_writer(database, shared=False)
    other = await OtherWorkersTurn(database).take()
    try:
        await asyncio.wait_for(writer.unit(insert("alone")), WAIT_S)
        assert stored_notes(database) == {"alone"}
        assert not other.someone_waits()
    finally:
        other.give()
        await writer.close()


@pytest.mark.parametrize("shared", [True, False])
async def test_a_writer_gives_its_turn_back_after_each_round(tmp_path: Path,
                                                             shared: bool) -> None:
    database = tmp_path / "w.sqlite3"
    writer = await open_writer(database, shared=shared)
    try:
        await writer.unit(insert("one"))
        (await OtherWorkersTurn(database).take()).give()  # "not reached" if kept
        await writer.unit(insert("two"))  # and it takes it again
        assert stored_notes(database) == {"one", "two"}
    finally:
        await writer.close()


async def test_a_worker_gives_its_turn_back_after_a_unit_that_fails(tmp_path: Path) -> None:
    """Alone in its round, a failing unit is answered on the loop, without a
    COMMIT: the turn taken there goes back too."""
    database = tmp_path / "w.sqlite3"
    writer = await open_writer(database, shared=True)
    try:
        with pytest.raises(sqlite3.IntegrityError):
            await writer.unit(lambda db: db.execute("INSERT INTO t (note) VALUES (NULL)"))
        (await OtherWorkersTurn(database).take()).give()  # "not reached" if kept
        await writer.unit(insert("after"))
        assert stored_notes(database) == {"after"}
    finally:
        await writer.close()
