"""Hostile input, the long run: the strategies of tests/api/test_hostile_input.py
(tests/support/hostile_strategies.py), many more examples, one server.

paygrid runs as its own OS process (so a crash is seen as one) on a
throw-away SQLite file, with three simulated channels. For every paygrid.v1
method it sends `--examples` requests built from the protos (valid-looking
and hostile values in every field), then as many malformed encodings (raw
bytes through a generic call); SubmitBatch gets `--stream-examples` streams
of each kind (a stream costs ~0.15 s: the server waits 100 ms to tell a
half-close from a cancel). Calls go one at a time, so each can be checked:

  - its status is one the method may answer, never UNKNOWN or INTERNAL;
    INVALID_ARGUMENT carries field violations naming fields of the request;
  - a refused call leaves the database as it was (every table's contents
    but a replica's heartbeat, before and after; compared only when PRAGMA
    data_version says something was committed meanwhile);
  - the server process is alive and answers health checks SERVING.

It prints, per method and kind, the requests sent, the statuses seen and
the violations (with the first few requests that caused them), and exits 1
on any violation.

  scripts/fuzz_requests --examples 2000 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from paygrid.v1 import batch_service_pb2 as batch_pb  # noqa: E402
from paygrid.v1 import batch_service_pb2_grpc as batch_grpc  # noqa: E402
from paygrid.v1 import payment_service_pb2 as pb  # noqa: E402
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc  # noqa: E402
from tests.support.api_key_metadata import keyed_channel  # noqa: E402
from tests.support.local_process import free_loopback_port, wait_until_serving  # noqa: E402
from tests.support.hostile_probe import (  # noqa: E402
    Database,
    ServerStatuses,
    must_leave_db_unchanged,
    send,
    serving,
    status_problems,
)
from tests.support.hostile_strategies import (  # noqa: E402
    METHODS,
    Known,
    Method,
    RequestStrategies,
    malformed_bytes,
    requests_for,
)

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
database = "{database}"

[[channels]]
name = "card"
currencies = ["USD", "EUR", "GBP", "JPY", "KWD"]
priority = 10

[[channels]]
name = "wallet"
currencies = ["USD", "EUR"]
max_amount_minor = 100000
priority = 20

[[channels]]
name = "bank_transfer"
currencies = ["EUR", "CHF"]
priority = 30
"""
SHOWN_VIOLATIONS = 5
SHOWN_REQUEST_CHARS = int(os.environ.get("FUZZ_SHOWN_REQUEST_CHARS", "600"))
HEALTH_CHECK_EVERY = 200


@dataclass
class Row:
    method: str
    kind: str
    sent: int = 0
    codes: Counter = field(default_factory=Counter)
    violations: int = 0
    examples: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Fuzz:
    def __init__(self, channel: grpc.aio.Channel, db: Database, server: ServerStatuses,
                 process: subprocess.Popen, known: Known) -> None:
        self.channel = channel
        self.known = known
        self.db = db
        self.server = server
        self.process = process
        self.dead = ""
        self._after_stream = False

    async def probe(self, row: Row, method: Method, payloads: list[bytes], shown: str) -> None:
        try:
            await self._settle()
        except AssertionError as stuck:  # the call before left work that never ends
            row.violations += 1
            row.examples.append(f"before this request: {stuck}\n      request: {shown[:600]}")
        self.db.mark_before()
        outcome = await send(self.channel, method, payloads, server=self.server)
        problems = status_problems(outcome)
        if must_leave_db_unchanged(outcome, payloads) and self.db.changed_since_before():
            problems.append(f"{outcome.code.name} ({outcome.reason}) changed the database")
        self.db.release_before()
        self._after_stream = method.request_streaming
        if outcome.code == grpc.StatusCode.OK:
            self.known.learn(method.name, payloads, outcome.responses)
        row.sent += 1
        row.codes[outcome.code.name] += 1
        if self.process.poll() is not None:
            self.dead = f"the server exited with code {self.process.returncode}"
        elif row.sent % HEALTH_CHECK_EVERY == 0 and not await serving(self.channel):
            self.dead = "the server no longer answers health checks SERVING"
        if self.dead:
            problems.append(self.dead)
        if problems:
            row.violations += 1
            if len(row.examples) < SHOWN_VIOLATIONS:
                row.examples.append(f"{problems}\n      request: {shown[:SHOWN_REQUEST_CHARS]}")

    async def _settle(self) -> None:
        """Before a call: nothing left running from the one before (a batch
        stream's groups finish after it; a unary call stores before it answers)."""
        if self._after_stream or self.db.busy():
            await self.db.wait_until_quiet()


def _shown(method: Method, payloads: list[bytes], messages=None) -> str:
    if messages is not None:
        from google.protobuf import text_format
        return " | ".join(text_format.MessageToString(m, as_one_line=True) for m in messages)
    return " | ".join(p.hex() for p in payloads)


def run_kind(loop: asyncio.AbstractEventLoop, fuzz: Fuzz, method: Method, kind: str,
             strategy: st.SearchStrategy, examples: int, seed_value: int) -> Row:
    row = Row(method.name, kind)
    started = time.perf_counter()

    @seed(seed_value)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(drawn) -> None:
        if fuzz.dead:
            return
        if kind == "messages":
            payloads = [m.SerializeToString() for m in drawn]
            shown = _shown(method, payloads, drawn)
        else:
            payloads = drawn
            shown = _shown(method, payloads)
        loop.run_until_complete(fuzz.probe(row, method, payloads, shown))

    one()
    row.seconds = time.perf_counter() - started
    return row


def strategies_for(method: Method, strategies: RequestStrategies, known: Known
                   ) -> dict[str, st.SearchStrategy]:
    if not method.request_streaming:
        return {"messages": requests_for(method, strategies),
                "raw bytes": malformed_bytes(method.request, strategies.request(method)).map(
                    lambda raw: [raw])}
    bad = malformed_bytes(batch_pb.SubmitBatchRequest,
                          strategies.batch_stream().map(lambda s: s[-1]))
    good_header = st.builds(lambda: batch_pb.SubmitBatchRequest(header=batch_pb.BatchHeader(
        batch_id=known.fresh("raw"), payer="acct_1")).SerializeToString())
    good_chunk = st.just(batch_pb.SubmitBatchRequest(transactions=batch_pb.BatchTransactions(
        transactions=[batch_pb.BatchTransaction(reference="raw-1", payee="payee_1",
                                                amount={"currency": "EUR", "amount_minor": 100})]
    )).SerializeToString())
    return {"messages": requests_for(method, strategies),
            "raw bytes": st.one_of(
                bad.map(lambda b: [b]),
                st.tuples(good_header, st.lists(st.one_of(bad, good_chunk), min_size=1,
                                                max_size=3)).map(lambda p: [p[0], *p[1]]))}


async def seed_known(channel: grpc.aio.Channel, known: Known) -> None:
    """A payment and a batch that requests can name."""
    payment = (await pb_grpc.PaymentServiceStub(channel).Pay(pb.PayRequest(
        idempotency_key="known-1", payer="acct_1",
        legs=[pb.PayLeg(payee="merchant_1", amount={"currency": "USD", "amount_minor": 1000})]),
        timeout=30)).payment
    known.payment_ids = [payment.payment_id]
    header = batch_pb.SubmitBatchRequest(header=batch_pb.BatchHeader(batch_id="known-batch",
                                                                      payer="acct_1"))
    items = batch_pb.SubmitBatchRequest(transactions=batch_pb.BatchTransactions(transactions=[
        batch_pb.BatchTransaction(reference=f"r{i}", payee=f"payee_{i}",
                                  amount={"currency": "EUR", "amount_minor": 100})
        for i in (1, 2)]))
    async for _ in batch_grpc.BatchServiceStub(channel).SubmitBatch(iter([header, items]),
                                                                    timeout=30):
        pass
    known.batch_ids = ["known-batch"]


def print_rows(rows: list[Row]) -> None:
    print(f"{'method':<16}{'kind':<11}{'sent':>7}{'violations':>11}{'s':>7}  statuses")
    for r in rows:
        codes = ", ".join(f"{c} {n}" for c, n in r.codes.most_common())
        print(f"{r.method:<16}{r.kind:<11}{r.sent:>7}{r.violations:>11}{r.seconds:>7.1f}  {codes}")
    total = sum(r.sent for r in rows)
    print(f"{'total':<27}{total:>7}{sum(r.violations for r in rows):>11}"
          f"{sum(r.seconds for r in rows):>7.1f}")
    for r in rows:
        for example in r.examples:
            print(f"\nVIOLATION {r.method} ({r.kind}): {example}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000,
                        help="requests per unary method and kind (default 1000)")
    parser.add_argument("--stream-examples", type=int, default=None,
                        help="SubmitBatch streams per kind (default: examples / 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="",
                        help="comma-separated method names (default: all)")
    args = parser.parse_args()
    stream_examples = args.stream_examples if args.stream_examples is not None else max(
        1, args.examples // 10)
    wanted = {m for m in args.methods.split(",") if m}
    unknown = wanted - {m.name for m in METHODS}
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}")

    # SIGTERM unwinds like Ctrl-C, so the server process is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="paygrid-fuzz-") as folder:
        port, metrics_port = free_loopback_port(), free_loopback_port()
        database = Path(folder) / "paygrid.sqlite3"
        config = Path(folder) / "paygrid.toml"
        config.write_text(CONFIG.format(port=port, database=database))
        log = Path(folder) / "server.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "paygrid_server", "serve", "--config", str(config),
             "--log-level", "WARNING"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"),
            env={**os.environ, "PAYGRID_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"})
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(wait_until_serving(port, process))
            channel = keyed_channel(f"127.0.0.1:{port}")
            known = Known()
            loop.run_until_complete(seed_known(channel, known))
            fuzz = Fuzz(channel, Database(database), ServerStatuses(metrics_port), process,
                        known)
            strategies = RequestStrategies(known)
            rows = []
            print(f"paygrid pid {process.pid}, seed {args.seed}, {args.examples} requests per "
                  f"method and kind, {stream_examples} SubmitBatch streams per kind", flush=True)
            for method in METHODS:
                if wanted and method.name not in wanted:
                    continue
                count = stream_examples if method.request_streaming else args.examples
                for kind, strategy in strategies_for(method, strategies, known).items():
                    rows.append(run_kind(loop, fuzz, method, kind, strategy, count, args.seed))
                    r = rows[-1]
                    print(f"  {r.method} ({r.kind}): {r.sent} sent, {r.violations} violations, "
                          f"{r.seconds:.1f} s", flush=True)
                    if fuzz.dead:
                        break
                if fuzz.dead:
                    break
            alive = process.poll() is None and loop.run_until_complete(serving(channel))
            loop.run_until_complete(channel.close())
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
            loop.close()
        print()
        print_rows(rows)
        errors = [line for line in log.read_text().splitlines() if "error" in line.lower()]
        if errors:
            print(f"\nserver log: {len(errors)} lines with 'error', the first ones:")
            print("\n".join(errors[:10]))
    if not alive:
        print("\nFAILED: the server did not survive")
        return 1
    if any(r.violations for r in rows):
        print("\nFAILED: violations above")
        return 1
    print("\nOK: no violations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
