"""Runs one channel simulator standalone:
python -m paygrid_server.simulator --name card --listen 127.0.0.1:50061 --latency-ms 100
"""

from __future__ import annotations

import argparse
import asyncio

from pathlib import Path

from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator
from paygrid_server.tls_credentials import server_credentials


async def _serve(args: argparse.Namespace) -> None:
    behaviour = SimulatorBehaviour(args.latency_ms, args.jitter_ms, args.failure_rate, args.seed)
    credentials = None
    if args.tls_cert_file:
        credentials = server_credentials(args.tls_cert_file, args.tls_key_file,
                                         args.tls_client_ca_file)
    server, _, port = await start_simulator(args.name, behaviour, args.listen,
                                            credentials=credentials)
    print(f"channel simulator {args.name!r} listening on port {port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description="paygrid channel simulator (paygrid.channel.v1)")
    parser.add_argument("--name", default="card")
    parser.add_argument("--listen", default="127.0.0.1:50061")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--tls-cert-file", type=Path, help="serve TLS with this certificate")
    parser.add_argument("--tls-key-file", type=Path)
    parser.add_argument("--tls-client-ca-file", type=Path,
                        help="require client certificates signed by this CA (mTLS)")
    try:
        asyncio.run(_serve(parser.parse_args()))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
