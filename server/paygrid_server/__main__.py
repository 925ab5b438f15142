"""paygrid-server: `serve` runs the gRPC server until SIGTERM or SIGINT;
`check-config` prints the effective configuration; `reconcile` compares
paygrid's records with the channels'; `new-api-key` makes a key."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

from paygrid_server import process_shutdown, startup_failure
from paygrid_server.api_keys import TENANT_ID_PATTERN, api_key_sha256, new_api_key
from paygrid_server.app import PaygridApp
from paygrid_server.config import API_KEYS_ENV, SETTINGS, ConfigError, ServerConfig, load_config
from paygrid_server.logging_setup import configure_logging
from paygrid_server.reconciliation_command import run_reconciliation
from paygrid_server.startup_failure import StartupFailure
from paygrid_server.storage.postgres.database import redacted_dsn
from paygrid_server.tls_credentials import TlsFileUnreadable
from paygrid_server.worker_supervisor import (
    WorkerSupervisor,
    is_worker,
    supervisor_pid,
    tell_ready,
    worker_count,
)


GC_YOUNG_THRESHOLD = 10_000


async def _serve(config: ServerConfig) -> None:
    app = await PaygridApp.start(config)
    # Everything made at start-up lives as long as the process: leaving it
    # out of the collector's full passes removed the ~15 ms gen-2 pauses
    # seen under load (scripts/bench).
    gc.collect()
    gc.freeze()
    # A young collection every 10,000 new objects, not every 700: a batch
    # makes several per item (inputs, items, orders, records), and py-spy
    # found the collector at 6.5% of the event loop's samples under
    # SubmitBatch; server CPU per batch item fell ~3 us (of ~56). Cycles
    # are still collected, in fewer and bigger rounds.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    stop = asyncio.Event()
    process_shutdown.on_stop_signals(asyncio.get_running_loop(), stop.set)
    if not is_worker():  # a worker's supervisor says it once for all
        print(f"paygrid serving on {config.listen.rsplit(':', 1)[0]}:{app.port} "
              f"(database {config.database_shown})", file=sys.stderr, flush=True)
    tell_ready()
    await stop.wait()
    process_shutdown.start_hard_deadline(
        (config.shutdown_drain_delay_ms + config.shutdown_grace_ms) / 1_000
        + process_shutdown.HARD_DEADLINE_MARGIN_S)
    await app.stop()


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=os.environ.get("PAYGRID_CONFIG"),
                        help="TOML config file (env PAYGRID_CONFIG); "
                             "see config/paygrid.example.toml")
    for setting in SETTINGS:
        parser.add_argument(setting.flag, dest=setting.dest, default=None, metavar="VALUE",
                            help=f"[{setting.section}] {setting.key} (env {setting.env})")


def _load(args: argparse.Namespace) -> ServerConfig:
    return load_config(args.config, {s.dest: getattr(args, s.dest) for s in SETTINGS})


def _printable(config: ServerConfig) -> dict:
    def plain(value):
        if isinstance(value, (Path,)):
            return str(value)
        if isinstance(value, frozenset):
            return sorted(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return value
    return plain(config)


def _new_api_key(tenant: str) -> int:
    if not TENANT_ID_PATTERN.fullmatch(tenant):
        print(f"paygrid-server: tenant must be 1-64 of a-z, 0-9, '_' or '-', got {tenant!r}",
              file=sys.stderr)
        return 2
    key = new_api_key(tenant)
    digest = api_key_sha256(key)
    print(f"API key (give it to the client; it is not stored anywhere):\n  {key}\n"
          f"Config file ([auth]):\n  api_keys = [{{ tenant = \"{tenant}\", sha256 = \"{digest}\" }}]\n"
          f"or environment:\n  {API_KEYS_ENV}={tenant}:{digest}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="paygrid-server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC server")
    _add_config_options(serve)
    serve.add_argument("--log-level", default=os.environ.get("PAYGRID_LOG_LEVEL", "INFO"),
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
                       help="env PAYGRID_LOG_LEVEL")
    serve.add_argument("--workers", default=os.environ.get("PAYGRID_WORKERS", "1"),
                       metavar="N", help="server processes sharing the port: a number, or "
                       "auto (one per core); on SQLite they share the file "
                       "(env PAYGRID_WORKERS; default 1)")
    check = commands.add_parser("check-config",
                                help="validate the configuration and print it as JSON")
    _add_config_options(check)
    reconcile = commands.add_parser(
        "reconcile", help="compare paygrid's records with each remote channel's own")
    _add_config_options(reconcile)
    reconcile.add_argument("--output", choices=["human", "json"], default="human")
    key = commands.add_parser("new-api-key", help="make an API key and print its config line")
    key.add_argument("--tenant", required=True)
    args = parser.parse_args()
    if args.command == "new-api-key":
        sys.exit(_new_api_key(args.tenant))
    try:
        config = _load(args)
    except ConfigError as error:
        _fail(startup_failure.bad_config(error))
    if args.command == "check-config":
        printed = _printable(config)
        printed["postgres_dsn"] = config.postgres_dsn and config.database_shown  # no password
        printed["events_rabbitmq"]["url"] = redacted_dsn(config.events_rabbitmq.url)
        print(json.dumps(printed, indent=2))
        return
    if args.command == "reconcile":
        sys.exit(run_reconciliation(config, args.output))
    try:
        workers = worker_count(args.workers)
    except ValueError as error:
        serve.error(f"--workers: {error}")
    configure_logging(args.log_level, worker_of=supervisor_pid())
    try:
        if workers > 1:
            sys.exit(asyncio.run(WorkerSupervisor(config, workers, sys.argv[1:]).run()))
        asyncio.run(_serve(config))
    except (ConfigError, TlsFileUnreadable) as error:
        _fail(startup_failure.bad_config(error))
    except StartupFailure as failure:
        _fail(failure)


def _fail(failure: StartupFailure) -> NoReturn:
    """One line and exit code 2: the operator's to fix, not a crash to debug."""
    print(failure.line(), file=sys.stderr, flush=True)
    sys.exit(startup_failure.EXIT_CODE)


if __name__ == "__main__":
    main()
