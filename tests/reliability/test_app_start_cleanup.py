"""PaygridApp.start, failing half way (here: at the metrics port, after the
database, a simulator and the channels were opened), closes what it opened,
in this process: the database's lock is free, the simulator's port can be
bound again, no channel or task is left behind."""

from __future__ import annotations

import asyncio
import fcntl
import socket
from pathlib import Path

import pytest

from paygrid_server import app as app_module
from paygrid_server.app import PaygridApp
from paygrid_server.config import ChannelConfig, ObservabilityConfig, ServerConfig
from paygrid_server.startup_failure import StartupFailure


async def test_a_start_failing_at_the_metrics_port_leaves_nothing_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple] = []
    start_simulator = app_module.start_simulator

    async def recorded_start_simulator(*args, **kwargs):
        started.append(await start_simulator(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(app_module, "start_simulator", recorded_start_simulator)
    database = tmp_path / "paygrid.sqlite3"
    tasks_before = asyncio.all_tasks()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        config = ServerConfig(
            channels=(ChannelConfig("card", currencies=frozenset({"EUR"})),),  # its own process port
            database_path=database, listen="127.0.0.1:0",
            observability=ObservabilityConfig(
                metrics_listen=f"127.0.0.1:{held.getsockname()[1]}"))
        with pytest.raises(StartupFailure, match="cannot serve /metrics"):
            await PaygridApp.start(config)
    assert len(started) == 1, "the simulator was started before the metrics port failed"
    _server, _simulator, simulator_port = started[0]
    with socket.socket() as again:
        again.bind(("127.0.0.1", simulator_port))  # raises if the simulator still listens
    with open(f"{database}.lock", "rb+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the database is still open
    assert asyncio.all_tasks() - tasks_before == set()
