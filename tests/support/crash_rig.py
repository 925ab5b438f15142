"""A paygrid server that can be SIGKILLed, with channels that outlive it.

The channel simulators run in the driving process, so their ledgers (the
money that really moved) survive every kill of the server; the server is its
own OS process on a real SQLite file, restarted on the same file and port.
Used by the crash scenarios (tests and scripts/reliability_crash).
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Sequence

import grpc

from tests.support.api_key_metadata import keyed_channel
from paygrid_server.simulator.channel_ledger import ChannelLedger
from paygrid_server.simulator.channel_simulator import (
    ChannelSimulator,
    SimulatorBehaviour,
    start_simulator,
)
from tests.support.server_process import ServerProcess, free_port, write_config

# A restarted server is back within about a second: reconnect at once, not
# after grpc's default backoff (1 s growing to 120 s).
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


@dataclass
class CrashRig:
    server: ServerProcess
    port: int
    database: Path  # or a PostgreSQL DSN (count_by_status is SQLite's)
    ledgers: dict[str, ChannelLedger]
    simulators: dict[str, ChannelSimulator] = field(default_factory=dict)
    kills: int = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self) -> grpc.aio.Channel:
        return keyed_channel(self.target, options=RECONNECT_OPTIONS)

    def kill(self) -> None:
        """SIGKILL, no warning: synchronous, so it can be called from inside a
        request generator at an exact message."""
        self.server.kill()
        self.kills += 1

    async def restart(self, killed_after_ms: int | None = None) -> None:
        """Returns once SERVING, i.e. after start-up recovery has run. With
        `killed_after_ms`, the restart is itself SIGKILLed that long after it
        was spawned (loading, recovering, or already serving: whatever it was
        doing by then), then restarted again."""
        if killed_after_ms is not None:
            self.server.spawn()
            await asyncio.sleep(killed_after_ms / 1_000)
            self.kill()
        await self.server.start(self.port)

    def count_by_status(self, table: str) -> dict[str, int]:
        """Rows of `table` by status, read from the file as the server left it
        (call it while the server is down)."""
        with sqlite3.connect(self.database) as db:
            return dict(db.execute(f"SELECT status, count(*) FROM {table} GROUP BY status"))


@asynccontextmanager
async def crash_rig(workdir: Path, channels: Sequence[str],
                    behaviour: SimulatorBehaviour) -> AsyncIterator[CrashRig]:
    """Simulators for `channels` (equal priority: the first is tried first), then a
    running server; everything is stopped on exit."""
    async with crash_rigs(workdir, channels, behaviour) as (rig,):
        yield rig


@asynccontextmanager
async def crash_rigs(workdir: Path, channels: Sequence[str], behaviour: SimulatorBehaviour,
                     database: str | None = None, replicas: int = 1
                     ) -> AsyncIterator[tuple[CrashRig, ...]]:
    """As crash_rig, with `replicas` servers sharing the simulators and one
    database: a SQLite file in `workdir` (one server only) or a PostgreSQL DSN."""
    workdir.mkdir(parents=True, exist_ok=True)
    simulators = [await start_simulator(name, behaviour) for name in channels]
    ledgers = {name: simulator.ledger for name, (_, simulator, _) in zip(channels, simulators)}
    rigs = []
    for replica in range(replicas):
        port = free_port()
        stored = database or workdir / "paygrid.sqlite3"
        suffix = "" if replicas == 1 else f"-{replica}"
        config = write_config(workdir / f"paygrid{suffix}.toml", port, stored,  # type: ignore[arg-type]
                              {name: sim_port for name, (_, _, sim_port) in zip(channels, simulators)})
        if database is not None:
            # Several servers (and other tests) share PostgreSQL's connections.
            config.write_text(config.read_text() + "[postgres]\npool_max_connections = 5\n")
        rigs.append(CrashRig(ServerProcess(config, workdir / f"server{suffix}.log"), port, stored,
                             ledgers, {name: simulator
                                       for name, (_, simulator, _) in zip(channels, simulators)}))
    try:
        for rig in rigs:
            await rig.restart()
        yield tuple(rigs)
    finally:
        slow_stop = None
        for rig in rigs:
            try:
                rig.server.terminate()
            except subprocess.TimeoutExpired as error:
                rig.server.kill()  # no process left behind; the slow stop is still reported
                slow_stop = slow_stop or error
        for sim_server, _, _ in simulators:
            await sim_server.stop(None)
        if slow_stop is not None:
            raise slow_stop
