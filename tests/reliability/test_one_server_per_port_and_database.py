"""One server per port and per SQLite file (issue 14, item 1): a second
server on a taken port, or on a database another live process holds, refuses
to start with one line; a killed holder never blocks a restart; several
processes share a port only when the operator turns reuse_port on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from paygrid_server.config import ConfigError, load_config
from tests.support.server_process import ROOT, ServerProcess, free_port, write_config


def serve_once(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A server expected to refuse to start: its exit code and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "paygrid_server", "serve", "--metrics-listen", "127.0.0.1:0",
         *args], capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, **(env or {})})


def refusal(result: subprocess.CompletedProcess) -> str:
    """The one line a refused start prints (log lines are JSON)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, result.stderr
    return lines[0]


async def test_a_second_server_on_a_taken_port_refuses_to_start(tmp_path: Path) -> None:
    port = free_port()
    first = ServerProcess(write_config(tmp_path / "a.toml", port, tmp_path / "a.sqlite3", {}),
                          tmp_path / "a.log")
    try:
        await first.start(port)
        line = refusal(serve_once("--listen", f"127.0.0.1:{port}",
                                  "--database", str(tmp_path / "other.sqlite3")))
        assert line.startswith(f"paygrid-server: cannot listen on 127.0.0.1:{port}")
        assert "--listen" in line and "--reuse-port" in line
        assert first.process.poll() is None, "the first server serves on"
    finally:
        first.terminate()


async def test_with_reuse_port_on_two_servers_share_the_port_on_purpose(tmp_path: Path) -> None:
    port = free_port()
    servers = [ServerProcess(write_config(tmp_path / f"{n}.toml", port, tmp_path / f"{n}.sqlite3",
                                          {}, reuse_port="true"), tmp_path / f"{n}.log")
               for n in ("a", "b")]
    try:
        for server in servers:
            await server.start(port)
        assert all(server.process.poll() is None for server in servers)
    finally:
        for server in servers:
            server.terminate()


async def test_a_second_server_on_a_held_sqlite_file_names_the_holder(tmp_path: Path) -> None:
    port = free_port()
    database = tmp_path / "paygrid.sqlite3"
    first = ServerProcess(write_config(tmp_path / "a.toml", port, database, {}),
                          tmp_path / "a.log")
    try:
        await first.start(port)
        line = refusal(serve_once("--listen", f"127.0.0.1:{free_port()}",
                                  "--database", str(database)))
        assert line.startswith(f"paygrid-server: database {database} is in use by process "
                               f"{first.process.pid};"), line
        assert "--database" in line
        assert first.process.poll() is None
    finally:
        first.terminate()


async def test_a_killed_holder_never_blocks_a_restart(tmp_path: Path) -> None:
    port = free_port()
    database = tmp_path / "paygrid.sqlite3"
    server = ServerProcess(write_config(tmp_path / "a.toml", port, database, {}),
                           tmp_path / "a.log")
    try:
        await server.start(port)
        server.kill()  # SIGKILL, waited for: no chance to release anything itself
        await server.start(port)  # at once, on the same file and port
    finally:
        server.terminate()


async def test_a_cleanly_stopped_holder_leaves_the_file_free(tmp_path: Path) -> None:
    port = free_port()
    database = tmp_path / "paygrid.sqlite3"
    server = ServerProcess(write_config(tmp_path / "a.toml", port, database, {}),
                           tmp_path / "a.log")
    await server.start(port)
    server.terminate()
    assert server.process.returncode == 0
    assert (tmp_path / "paygrid.sqlite3.lock").read_text() == "", "no pid of a stopped holder"
    try:
        await server.start(port)
    finally:
        server.terminate()


@pytest.mark.parametrize(("source", "value", "expected"), [
    ("toml", "true", True), ("toml", "false", False),
    ("env", "true", True), ("env", "0", False), ("flag", "yes", True), ("flag", "false", False),
])
def test_reuse_port_is_off_by_default_and_set_by_each_source(
        tmp_path: Path, source: str, value: str, expected: bool) -> None:
    assert load_config(None, environ={}).reuse_port is False
    path = tmp_path / "paygrid.toml"
    path.write_text(f"[server]\nreuse_port = {value}\n" if source == "toml" else "")
    config = load_config(path, {"reuse_port": value} if source == "flag" else {},
                         environ={"PAYGRID_REUSE_PORT": value} if source == "env" else {})
    assert config.reuse_port is expected


def test_a_reuse_port_that_is_not_a_boolean_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PAYGRID_REUSE_PORT: expected true or false"):
        load_config(None, environ={"PAYGRID_REUSE_PORT": "maybe"})
    path = tmp_path / "paygrid.toml"
    path.write_text("[server]\nreuse_port = 1\n")
    with pytest.raises(ConfigError, match="server.reuse_port: expected bool"):
        load_config(path, environ={})
