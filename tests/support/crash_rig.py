"""A paygrid server that can be SIGKILLed, with channels that outlive it.

The channel simulators run in the driving process, so their ledgers (the
money that really moved) survive every kill of the server; the server is its
own OS process on a real SQLite file, restarted on the same file and port.
With `workers` > 1 it is `serve --workers N` on PostgreSQL instead: a kill
SIGKILLs one worker (in turn), and its supervisor starts it again.
Used by the crash scenarios (tests and scripts/reliability_crash).
"""

from __future__ import annotations

import asyncio
import os
import signal
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
from paygrid_server.ledger_reconciliation import Rows, sqlite_rows
from tests.support.postgres_databases import postgres_rows
from tests.support.server_process import ServerProcess, free_port, wait_for, write_config
from tests.support.worker_log import log_events, own_connection

# A restarted server is back within about a second: reconnect at once, not
# after grpc's default backoff (1 s growing to 120 s). grpc core reads
# min_reconnect_backoff_ms as the minimum connect timeout, not a backoff: at
# 100 ms a first connect to a just-restarted server missed it under load
# (UNAVAILABLE); a refused connect (server down) still fails at once.
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 5_000),
    ("grpc.max_reconnect_backoff_ms", 500),
]


@dataclass
class CrashRig:
    server: ServerProcess
    port: int
    database: Path | str  # the SQLite file, or the PostgreSQL DSN (workers)
    ledgers: dict[str, ChannelLedger]
    simulators: dict[str, ChannelSimulator] = field(default_factory=dict)
    kills: int = 0
    workers: int = 1
    _started_before: int = 0  # workers started when the last one was killed
    _restarts_due: int = 0  # workers that kill killed
    _log_start: int = 0  # where the running process's lines begin in the log

    async def start(self) -> None:
        self._log_start = self.server.log.stat().st_size if self.server.log.exists() else 0
        await self.server.start(self.port)

    def relay_leading(self) -> bool:
        """Whether the running process leads the event relay: its last
        leadership line says so (a killed process's lines are before
        _log_start; PostgreSQL frees its lock with its connection)."""
        with self.server.log.open("rb") as log:
            log.seek(self._log_start)
            lines = log.read().decode(errors="replace").splitlines()
        said = [line for line in lines
                if '"event_relay.leading"' in line or '"event_relay.lead_lost"' in line]
        return bool(said) and '"event_relay.leading"' in said[-1]

    @property
    def rows(self) -> Rows:
        if isinstance(self.database, Path):
            return sqlite_rows(self.database)
        dsn = self.database
        return lambda sql: postgres_rows(dsn, sql)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self) -> grpc.aio.Channel:
        """With workers, a connection of its own: the kernel picks its worker."""
        if self.workers > 1:
            return own_connection(self.target, RECONNECT_OPTIONS)
        return keyed_channel(self.target, options=RECONNECT_OPTIONS)

    def kill(self, stream_of: str | None = None) -> None:
        """SIGKILL, no warning: synchronous, so it can be called from inside a
        request generator at an exact message. With workers (each started
        again by the supervisor): the next worker in turn; with `stream_of`,
        the worker running that batch's stream, or every worker while the
        batch has none stored yet (the stream must break)."""
        if self.workers == 1:
            self.server.kill()
            self.kills += 1
            return
        started = log_events(self.server.log, "workers.worker_started")
        self._started_before = len(started)
        latest = {e["index"]: e["pid"] for e in started}  # each worker's current process
        victims = [latest[self.kills % self.workers]]
        if stream_of is not None:
            owners = [pid for (owner,) in self.rows(
                f"SELECT submission_owner FROM batches WHERE batch_id = '{stream_of}'")
                if owner and (pid := int(owner.split(":")[-2])) in latest.values()]
            victims = owners or list(latest.values())
        for pid in victims:
            _kill(pid)
        self._restarts_due = len(victims)
        self.kills += 1

    async def restart(self, killed_after_ms: int | None = None) -> None:
        """Returns once SERVING, i.e. after start-up recovery has run. With
        `killed_after_ms`, the restart is itself SIGKILLed that long after it
        was spawned (loading, recovering, or already serving: whatever it was
        doing by then), then restarted again."""
        if self.workers > 1:
            await self._worker_restarted(killed_after_ms)
            return
        if killed_after_ms is not None:
            self.server.spawn()
            await asyncio.sleep(killed_after_ms / 1_000)
            self.kill()
        await self.start()

    async def _worker_restarted(self, killed_after_ms: int | None) -> None:
        def started() -> list[dict]:
            return log_events(self.server.log, "workers.worker_started")

        due = self._started_before + self._restarts_due
        await wait_for(lambda: len(started()) >= due, "the workers' restart")
        if killed_after_ms is not None:
            await asyncio.sleep(killed_after_ms / 1_000)
            _kill(started()[-1]["pid"])
            self.kills += 1
            due = len(started()) + 1
            await wait_for(lambda: len(started()) >= due, "its restart")
        latest = {e["index"]: e["pid"] for e in started()}
        await wait_for(lambda: set(latest.values()) <= {e["pid"] for e in log_events(
            self.server.log, "workers.worker_ready")}, "the restarted workers to serve")

    def count_by_status(self, table: str) -> dict[str, int]:
        """Rows of `table` by status, as the server left them (call it while
        the server is down)."""
        return dict(self.rows(f"SELECT status, count(*) FROM {table} GROUP BY status"))


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # died already (a restart killed while starting): its supervisor starts it


@asynccontextmanager
async def crash_rig(workdir: Path, channels: Sequence[str], behaviour: SimulatorBehaviour,
                    workers: int = 1, dsn: str | None = None) -> AsyncIterator[CrashRig]:
    """Simulators for `channels` (equal priority: the first is tried first), then a
    running server (`workers` of them behind one port, on PostgreSQL `dsn`);
    everything is stopped on exit."""
    async with crash_rigs(workdir, channels, behaviour, dsn, workers=workers) as (rig,):
        yield rig


@asynccontextmanager
async def crash_rigs(workdir: Path, channels: Sequence[str], behaviour: SimulatorBehaviour,
                     database: str | None = None, replicas: int = 1, workers: int = 1,
                     relay_url: str | None = None) -> AsyncIterator[tuple[CrashRig, ...]]:
    """As crash_rig, with `replicas` servers (each of `workers` processes)
    sharing the simulators and one database: a SQLite file in `workdir` (one
    server only) or a PostgreSQL DSN; with `relay_url`, each relays the
    event log to that RabbitMQ ([events.rabbitmq] url)."""
    workdir.mkdir(parents=True, exist_ok=True)
    simulators = [await start_simulator(name, behaviour) for name in channels]
    ledgers = {name: simulator.ledger for name, (_, simulator, _) in zip(channels, simulators)}
    rigs = []
    for replica in range(replicas):
        port = free_port()
        stored: Path | str = database or workdir / "paygrid.sqlite3"
        suffix = "" if replicas == 1 else f"-{replica}"
        config = write_config(workdir / f"paygrid{suffix}.toml", port, stored,  # type: ignore[arg-type]
                              {name: sim_port for name, (_, _, sim_port) in zip(channels, simulators)})
        if database is not None:
            # Several servers (and other tests) share PostgreSQL's connections.
            config.write_text(config.read_text() + "[postgres]\npool_max_connections = 5\n")
        if relay_url is not None:
            config.write_text(config.read_text() + f'[events.rabbitmq]\nurl = "{relay_url}"\n')
        server = ServerProcess(config, workdir / f"server{suffix}.log",
                               ("--workers", str(workers)) if workers > 1 else ())
        rigs.append(CrashRig(server, port, stored, ledgers,
                             {name: simulator
                              for name, (_, simulator, _) in zip(channels, simulators)},
                             workers=workers))
    try:
        for rig in rigs:
            await rig.start()
            if workers > 1:
                await wait_for(lambda: len(log_events(
                    rig.server.log, "workers.worker_ready")) == workers, "every worker to serve")
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
