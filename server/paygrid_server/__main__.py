"""paygrid-server serve: runs the gRPC server until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from paygrid_server.app import PaygridApp
from paygrid_server.config import ConfigError, load_config
from paygrid_server.logging_setup import configure_logging


async def _serve(args: argparse.Namespace) -> None:
    config = load_config(args.config, {"listen": args.listen, "database_path": args.database})
    app = await PaygridApp.start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"paygrid serving on {config.listen.rsplit(':', 1)[0]}:{app.port} "
          f"(database {config.database_path})", file=sys.stderr, flush=True)
    await stop.wait()
    await app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="paygrid-server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--config", type=Path, default=os.environ.get("PAYGRID_CONFIG"),
                       help="TOML config file (env PAYGRID_CONFIG)")
    serve.add_argument("--listen", default=os.environ.get("PAYGRID_LISTEN"),
                       help="host:port (env PAYGRID_LISTEN; default 127.0.0.1:50051)")
    serve.add_argument("--database", type=Path, default=os.environ.get("PAYGRID_DATABASE"),
                       help="SQLite file (env PAYGRID_DATABASE; default var/paygrid.sqlite3)")
    serve.add_argument("--log-level", default=os.environ.get("PAYGRID_LOG_LEVEL", "INFO"))
    args = parser.parse_args()
    configure_logging(args.log_level)
    try:
        asyncio.run(_serve(args))
    except ConfigError as error:
        sys.exit(f"paygrid-server: bad configuration: {error}")


if __name__ == "__main__":
    main()
