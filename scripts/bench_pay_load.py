"""Pay throughput and latency by concurrency: 1 leg, an in-process channel
simulator with 0 latency, every payment durable (SQLite, synchronous=FULL)
and idempotent (its own key), driven by the same load generator as the
no-op ceiling (bench_load.py). Usage (after scripts/setup):
  .venv/bin/python scripts/bench_pay_load.py [--duration-s 5] [--concurrency 1,8,32,128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import uuid

from paygrid.type.v1 import money_pb2
from paygrid.v1 import payment_service_pb2 as pb

from bench_load import measure_unary, measure_unary_at_rate
from bench_server import AUTH_METADATA, cpu_s, paygrid_server

PAY_METHOD = "/paygrid.v1.PaymentService/Pay"


def pay_request_maker(run_id: str):
    template = pb.PayRequest(payer="acct_bench_0001", legs=[pb.PayLeg(
        payee="merchant_0000", amount=money_pb2.Money(currency="USD", amount_minor=100))])

    def make(n: int) -> bytes:
        template.idempotency_key = f"bench-{run_id}-{n}"
        return template.SerializeToString()

    return make


def check_succeeded(response: bytes) -> None:
    payment = pb.PayResponse.FromString(response).payment
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED, payment


async def run(duration_s: float, concurrency_levels: list[int], channel_called_directly: bool,
              half_peak_rate: bool = True, extra_env: dict[str, str] | None = None) -> dict:
    """Closed-loop levels, then (half_peak_rate) an open-loop run at half of
    the best throughput seen, for the latency at that load. extra_env: the
    server's (bench_baseline_tree runs an older commit's code with it)."""
    levels = []
    at_half_peak = None
    async with paygrid_server(in_process_channel_latency_ms=0,
                              channel_called_directly=channel_called_directly,
                              extra_env=extra_env) as server:
        for level in concurrency_levels:
            cpu_before = cpu_s(server.pid)
            result = await measure_unary(
                server.target, PAY_METHOD, pay_request_maker(uuid.uuid4().hex[:8]), level,
                duration_s, AUTH_METADATA, check_succeeded)
            # Includes the warm-up calls' share; a rough cost per payment.
            result["server_cpu_us_per_call"] = round(
                (cpu_s(server.pid) - cpu_before) * 1e6 / (result["calls"] + level))
            levels.append(result)
        if half_peak_rate:
            peak_qps = max(level["qps"] for level in levels)
            at_half_peak = await measure_unary_at_rate(
                server.target, PAY_METHOD, pay_request_maker(uuid.uuid4().hex[:8]),
                peak_qps / 2, duration_s, AUTH_METADATA)
        with sqlite3.connect(server.database) as db:
            stored = db.execute("SELECT count(*) FROM payments WHERE status = 'SUCCEEDED'").fetchone()[0]
    # Warm-up calls are stored too; every timed call must be.
    timed = sum(level["calls"] for level in levels) + (at_half_peak or {}).get("calls", 0)
    assert stored >= timed, (stored, timed)
    return {"duration_s": duration_s, "channel_called_directly": channel_called_directly,
            "levels": levels, "at_half_peak": at_half_peak, "payments_stored": stored}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,8,32,128")
    parser.add_argument("--channel-over-grpc", action="store_true",
                        help="reach the in-process simulator over loopback gRPC "
                             "(default: call it directly)")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    result = asyncio.run(run(args.duration_s, levels, not args.channel_over_grpc))
    for level in result["levels"]:
        print(level)
    print("at half of peak:", result["at_half_peak"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
