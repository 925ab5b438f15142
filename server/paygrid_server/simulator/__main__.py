"""Runs one channel simulator standalone:
python -m paygrid_server.simulator --name card --listen 127.0.0.1:50061 --latency-ms 100
"""

from __future__ import annotations

import argparse
import asyncio

from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator


async def _serve(args: argparse.Namespace) -> None:
    behaviour = SimulatorBehaviour(args.latency_ms, args.jitter_ms, args.failure_rate, args.seed)
    server, _, port = await start_simulator(args.name, behaviour, args.listen)
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
    try:
        asyncio.run(_serve(parser.parse_args()))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
