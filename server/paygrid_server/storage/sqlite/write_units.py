"""What the SQLite writer (writer.py) and its event loop's rounds
(loop_rounds.py) pass between them: units of work and their answers."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(slots=True)
class Unit:
    work: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    in_transaction: bool  # False: runs on its own (migrations manage their own)
    handed_back: bool = False  # its outcome is on its way to its caller


# A unit's outcome: its result, or the error it ended with.
Outcome = tuple[Unit, Any, BaseException | None]


@dataclass(slots=True)
class LoopJob:
    """Work the loop hands to the writer's thread: `run` (on the thread)
    answers each of `units` (none: it waits for the workers' write turn);
    `answer` gets the answers on the loop, at once, when the thread is done
    with the connection."""
    units: list[Unit]
    run: Callable[[], None]
    answer: Callable[[list[Outcome]], None]
    loop: asyncio.AbstractEventLoop


def settle(outcomes: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    """On the futures' loop."""
    for future, result, error in outcomes:
        if future.cancelled():
            continue  # its caller went away; the work itself is done (or failed)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
