"""`[server] database` picks the engine: a path or sqlite:///path is SQLite
(the default), a postgresql:// DSN is PostgreSQL; the usual precedence
holds across engines, the pool limits are settings like any other, and the
DSN's password is never printed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from paygrid_server.config import ConfigError, PostgresConfig, load_config
from paygrid_server.storage.postgres.database import (
    PostgresDatabase,
    PostgresLimits,
    PostgresUnavailable,
)
from tests.support.server_process import ROOT, free_port

DSN = "postgresql://paygrid:s3cret@db.internal:5432/paygrid"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "paygrid.toml"
    path.write_text(text)
    return path


def test_the_default_is_sqlite() -> None:
    config = load_config(None, environ={})
    assert (config.database_engine, config.database_path, config.postgres_dsn) == (
        "sqlite", Path("var/paygrid.sqlite3"), None)


def test_a_dsn_selects_postgresql_and_later_sources_may_switch_back(tmp_path: Path) -> None:
    path = _file(tmp_path, f'[server]\ndatabase = "{DSN}"\n'
                           "[postgres]\npool_max_connections = 3\nstatement_timeout_ms = 1500\n")
    from_file = load_config(path, environ={})
    assert (from_file.database_engine, from_file.postgres_dsn) == ("postgresql", DSN)
    assert from_file.postgres == PostgresConfig(3, 1500, PostgresConfig().connect_timeout_ms)
    assert from_file.database_shown == "postgresql://paygrid:***@db.internal:5432/paygrid"

    env = load_config(path, environ={"PAYGRID_DATABASE": "sqlite:///data/p.sqlite3"})
    assert (env.database_engine, env.database_path, env.postgres_dsn) == (
        "sqlite", Path("data/p.sqlite3"), None)
    flag = load_config(path, {"database": "postgres://other/db"},
                       environ={"PAYGRID_DATABASE": "plain.sqlite3",
                                "PAYGRID_POSTGRES_CONNECT_TIMEOUT_MS": "700"})
    assert (flag.postgres_dsn, flag.postgres.connect_timeout_ms) == ("postgres://other/db", 700)
    assert load_config(None, {"database": "sqlite:////abs/p.sqlite3"},
                       environ={}).database_path == Path("/abs/p.sqlite3")


@pytest.mark.parametrize(("text", "message"), [
    ('[server]\ndatabase = "mysql://u:pw@h/db"\n', "server.database: expected a SQLite file path"),
    ('[server]\ndatabase = "sqlite:///"\n', "server.database: expected a SQLite file path"),
    ("[postgres]\npool_max_connections = 0\n", "postgres.pool_max_connections: must be greater"),
    ("[postgres]\npool_size = 4\n", "postgres: unknown keys pool_size"),
])
def test_bad_database_settings_are_refused_with_the_key_named(
        tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        load_config(_file(tmp_path, text), environ={})
    assert "pw@" not in str(error.value)  # a refused DSN is shown without its password


def test_check_config_prints_the_dsn_without_its_password() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "paygrid_server", "check-config"], capture_output=True, text=True,
        timeout=60, cwd=ROOT, env={"PATH": "", "PAYGRID_DATABASE": DSN})
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["postgres_dsn"] == "postgresql://paygrid:***@db.internal:5432/paygrid"
    assert printed["postgres"] == {"pool_max_connections": 10, "statement_timeout_ms": 30_000,
                                   "connect_timeout_ms": 5_000}
    assert "s3cret" not in result.stdout


async def test_an_unreachable_postgresql_stops_start_up_with_a_clear_message() -> None:
    dsn = f"postgresql://paygrid:s3cret@127.0.0.1:{free_port()}/paygrid"  # nobody listens
    with pytest.raises(PostgresUnavailable, match="cannot open PostgreSQL database") as error:
        await PostgresDatabase.open(dsn, PostgresLimits(connect_timeout_ms=2_000))
    assert "s3cret" not in str(error.value) and "127.0.0.1" in str(error.value)
    served = subprocess.run(
        [sys.executable, "-m", "paygrid_server", "serve", "--database", dsn,
         "--metrics-listen", "", "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert served.returncode != 0
    assert "paygrid-server: cannot open PostgreSQL database" in served.stderr
    assert "Traceback" not in served.stderr and "s3cret" not in served.stderr
