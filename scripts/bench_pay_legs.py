"""Wall time of multi-leg Pay calls against slow channels: shows the legs
run concurrently (3 legs x 100 ms take about 100 ms, not 300).

Runs a real paygrid server and a real channel simulator on loopback ports,
with a throw-away SQLite file. Usage (after scripts/setup):
  .venv/bin/python scripts/bench_pay_legs.py --legs 3 --latency-ms 100 --payments 50
"""

from __future__ import annotations

import sys
import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path


from paygrid.type.v1 import money_pb2
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/support/: helpers shared with the tests
from tests.support.api_key_metadata import keyed_channel
from paygrid_server.app import PaygridApp
from paygrid_server.config import ChannelConfig, ObservabilityConfig, ServerConfig
from paygrid_server.logging_setup import configure_logging
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(legs: int, latency_ms: float, payments: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        config = ServerConfig(
            listen="127.0.0.1:0", database_path=Path(folder) / "bench.sqlite3",
            observability=ObservabilityConfig(metrics_listen="127.0.0.1:0"),
            channels=(ChannelConfig("card", simulator=SimulatorBehaviour(latency_ms=latency_ms)),))
        app = await PaygridApp.start(config)
        try:
            async with keyed_channel(f"127.0.0.1:{app.port}") as channel:
                stub = pb_grpc.PaymentServiceStub(channel)
                wall_ms, server_ms = [], []
                for i in range(payments):
                    request = pb.PayRequest(
                        idempotency_key=f"bench-{i}", payer="acct_bench_0001",
                        legs=[pb.PayLeg(payee=f"merchant_{n:04d}",
                                        amount=money_pb2.Money(currency="USD", amount_minor=100))
                              for n in range(legs)])
                    started = time.perf_counter()
                    payment = (await stub.Pay(request, timeout=10)).payment
                    wall_ms.append((time.perf_counter() - started) * 1_000)
                    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED, payment
                    server_ms.append(payment.timing.processing_time.ToMicroseconds() / 1_000)
        finally:
            await app.stop()
    return {
        "legs": legs, "channel_latency_ms": latency_ms, "payments": payments,
        "wall_ms_p50": round(statistics.median(wall_ms), 1),
        "wall_ms_p99": round(_percentile(wall_ms, 0.99), 1),
        "wall_ms_min": round(min(wall_ms), 1), "wall_ms_max": round(max(wall_ms), 1),
        "server_processing_ms_p50": round(statistics.median(server_ms), 1),
        "sequential_would_be_ms": legs * latency_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legs", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--payments", type=int, default=50)
    args = parser.parse_args()
    assert 1 <= args.legs <= 16 and args.payments >= 1
    configure_logging("WARNING")
    result = asyncio.run(run(args.legs, args.latency_ms, args.payments))
    for key, value in result.items():
        print(f"{key:26} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
