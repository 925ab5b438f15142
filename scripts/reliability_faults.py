"""Channel faults and races, repeated with seeds: the long version of
tests/channels/test_channel_faults.py, tests/reliability/test_races.py and the concurrent tests
of test_idempotency.py and test_refunds.py.

Each run starts a real paygrid (gRPC on loopback, a throw-away SQLite file)
with three channels: `card` is a simulator server of its own, so it can be
killed and brought back with its books; `wallet` and `bank_transfer` run in
the app. A seeded random generator picks every count, amount, latency and
timing, then the run goes through the scenarios:

  spike       latency spikes around card's timeout under concurrent payments
  burst       an error burst (every card call fails) must open card's breaker;
              after the pause a good probe must close it
  hang        card holds its charges, paygrid fences them, then they land late
  kill        card's server is stopped with charges in flight, then restarted
  compensate  ALL_OR_NOTHING with a declined leg while card's voids fail
  pay_race    64 concurrent retries of one Pay key
  refund_race 64 concurrent partial refunds summing past the capture
  batch_race  one batch from 8 streams at once, fresh and after a dropped stream

After each scenario every payment must reach a final status, no call may
end UNKNOWN or INTERNAL, and the channels' books must agree with the
database (paygrid_server/ledger_reconciliation.py). It prints the
counts and exits 1 on any violation.

  scripts/reliability_faults --runs 20 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from paygrid.type.v1 import money_pb2
from paygrid.v1 import batch_service_pb2 as bpb
from paygrid.v1 import batch_service_pb2_grpc as bpb_grpc
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/support/: helpers shared with the tests
from tests.support.api_key_metadata import keyed_channel
from paygrid_server.app import PaygridApp
from paygrid_server.config import ChannelConfig, ObservabilityConfig, ServerConfig
from paygrid_server.domain.model import limits
from paygrid_server.domain.charging.circuit_breaker import BreakerState
from paygrid_server.logging_setup import configure_logging
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour, start_simulator
from paygrid_server.ledger_reconciliation import reconcile, sqlite_rows

BREAKER_THRESHOLD = 3
BREAKER_OPEN_MS = 300
RECOVERY_INTERVAL_MS = 200
SETTLE_TIMEOUT_S = 60.0
RACE_CALLERS = 64
BATCH_STREAMS = 8
FORBIDDEN_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


@dataclass
class Tally:
    counts: Counter = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def violation(self, run: int, scenario: str, message: str) -> None:
        self.violations.append(f"run {run} {scenario}: {message}")


def money(currency: str, amount_minor: int) -> money_pb2.Money:
    return money_pb2.Money(currency=currency, amount_minor=amount_minor)


def leg(payee: str, amount_minor: int, channel: str = "") -> pb.PayLeg:
    return pb.PayLeg(payee=payee, amount=money("USD", amount_minor), channel=channel)


class Rig:
    """One paygrid with its channels for one run."""

    def __init__(self, run: int, rng: random.Random, tally: Tally, folder: Path) -> None:
        self.run, self.rng, self.tally, self.folder = run, rng, tally, folder
        self.scenario = ""
        self.keys = 0

    async def start(self) -> None:
        self.card_timeout_ms = self.rng.randint(150, 400)
        self.card_server, self.card, self.card_port = await start_simulator(
            "card", SimulatorBehaviour(latency_ms=self.rng.uniform(0, 5),
                                       seed=self.rng.randrange(1 << 30)))
        self.database = self.folder / f"run-{self.run}.sqlite3"
        config = ServerConfig(
            listen="127.0.0.1:0", database_path=self.database, shutdown_grace_ms=5_000,
            observability=ObservabilityConfig(metrics_listen=""),
            breaker_failure_threshold=BREAKER_THRESHOLD, breaker_open_ms=BREAKER_OPEN_MS,
            recovery_interval_ms=RECOVERY_INTERVAL_MS,
            channels=(ChannelConfig("card", target=f"127.0.0.1:{self.card_port}", priority=10,
                                    timeout_ms=self.card_timeout_ms),
                      ChannelConfig("wallet", currencies=frozenset({"USD", "EUR"}), priority=20),
                      ChannelConfig("bank_transfer", currencies=frozenset({"EUR"}),
                                    priority=30)))
        self.app = await PaygridApp.start(config)
        self.channel = keyed_channel(f"127.0.0.1:{self.app.port}")
        self.stub = pb_grpc.PaymentServiceStub(self.channel)
        self.batches = bpb_grpc.BatchServiceStub(self.channel)

    async def stop(self) -> None:
        self.card.faults.clear()
        await self.card.finish_late_work()
        await self.channel.close()
        await self.app.stop()
        await self.card_server.stop(None)

    def ledgers(self) -> dict:
        ledgers = {name: sim.ledger for name, (_, sim) in self.app.simulators.items()}
        ledgers["card"] = self.card.ledger
        return ledgers

    def violation(self, message: str) -> None:
        self.tally.violation(self.run, self.scenario, message)

    def key(self, what: str) -> str:
        self.keys += 1
        return f"{what}-{self.run}-{self.keys}"

    async def pay(self, request: pb.PayRequest, timeout_s: float = 30) -> pb.Payment | None:
        try:
            payment = (await self.stub.Pay(request, timeout=timeout_s)).payment
        except grpc.aio.AioRpcError as error:
            if error.code() in FORBIDDEN_CODES:
                self.violation(f"Pay answered {error.code().name}: {error.details()}")
            else:
                self.tally.add(f"pay answered {error.code().name}")
            return None
        self.tally.add("payments")
        return payment

    def random_payment(self, payees: list[str] | None = None) -> pb.PayRequest:
        """1 to 3 legs, routed or pinned, either mode."""
        legs = []
        for i in range(self.rng.randint(1, 3)):
            payee = self.rng.choice(payees) if payees else f"merchant_{i}"
            channel = self.rng.choice(["", "", "card", "wallet"])
            legs.append(leg(f"{payee}_{self.keys}_{i}", self.rng.randint(1, 50_000), channel))
        mode = self.rng.choice([pb.PAYMENT_MODE_ALL_OR_NOTHING, pb.PAYMENT_MODE_INDEPENDENT])
        return pb.PayRequest(idempotency_key=self.key("pay"), payer="acct_reliability_0001",
                             legs=legs, mode=mode)

    async def close_breaker(self) -> None:
        """A healthy card closes its breaker again after the pause, with a
        good probe (the next scenario starts from a closed breaker)."""
        breaker = self.app.breakers["card"]
        if breaker.state is BreakerState.CLOSED:
            return
        self.tally.add("breaker open after a scenario")
        deadline = time.monotonic() + 10
        while breaker.state is not BreakerState.CLOSED and time.monotonic() < deadline:
            if breaker.state is BreakerState.HALF_OPEN:
                await self.pay(pb.PayRequest(idempotency_key=self.key("probe"),
                                             payer="acct_reliability_0001",
                                             legs=[leg("merchant_probe", 100, "card")]))
            await asyncio.sleep(0.02)
        if breaker.state is BreakerState.CLOSED:
            self.tally.add("breaker closed by a good probe")
        else:
            self.violation(f"card's breaker is still {breaker.state.value} after a good probe")

    async def settled(self) -> None:
        """Waits for the resolver, then checks the books against the database."""
        await self.card.finish_late_work()
        await self.close_breaker()
        rows = sqlite_rows(self.database)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while rows("SELECT count(*) FROM payments WHERE status = 'PROCESSING'")[0][0] or \
                rows("SELECT count(*) FROM refunds WHERE status = 'PENDING'")[0][0]:
            if time.monotonic() > deadline:
                break  # reported below as unsettled
            await asyncio.sleep(0.05)
        result = reconcile(rows, self.ledgers())
        for problem in result.violations:
            self.violation(problem)
        self.tally.add("reconciliations")

    # -- scenarios -------------------------------------------------------

    async def spike(self) -> None:
        extra_ms = self.card_timeout_ms * self.rng.uniform(0.5, 3.0)
        self.card.faults.slow_down(extra_ms, calls=self.rng.randint(1, 12))
        payments = await asyncio.gather(*(self.pay(self.random_payment())
                                          for _ in range(self.rng.randint(8, 32))))
        self.tally.add("charges slowed", self.card.faults.charges_slowed)
        self.card.faults.clear()
        await self.settled()
        late = sum(1 for p in payments if p for l in p.legs
                   if l.channel == "wallet" and l.attempts > 1)
        self.tally.add("legs failed over after a timeout", late)

    async def burst(self) -> None:
        breaker = self.app.breakers["card"]
        states: set[BreakerState] = set()

        async def watch() -> None:  # an open breaker stays so for BREAKER_OPEN_MS
            while True:
                states.add(breaker.state)
                await asyncio.sleep(0.005)

        watcher = asyncio.ensure_future(watch())
        # Every charge call at card fails while the burst lasts: no success
        # can close the breaker in between, so it must open.
        self.card.faults.fail_charges(1_000_000)
        await asyncio.gather(*(self.pay(self.random_payment())
                               for _ in range(self.rng.randint(4, 16))))
        watcher.cancel()
        failed = self.card.faults.charges_failed
        self.tally.add("charge calls failed", failed)
        if BreakerState.OPEN in states:
            self.tally.add("bursts that opened the breaker")
        elif failed >= BREAKER_THRESHOLD:
            self.violation(f"{failed} failed calls in a row never opened the breaker")
        self.card.faults.clear()
        await self.settled()

    async def hang(self) -> None:
        self.card.faults.hold_charges()
        pending = [asyncio.ensure_future(self.pay(self.random_payment()))
                   for _ in range(self.rng.randint(4, 16))]
        await asyncio.sleep(self.rng.uniform(0, 2 * self.card_timeout_ms) / 1_000)
        self.card.faults.release_charges()  # some were fenced already, some not yet
        await asyncio.gather(*pending)
        self.tally.add("charges held", self.card.faults.charges_held)
        await self.settled()

    async def kill(self) -> None:
        payees = ["hang_after_charge", "timeout", "merchant", "merchant"]
        self.card.behaviour = SimulatorBehaviour(latency_ms=self.rng.uniform(20, 200))
        pending = [asyncio.ensure_future(self.pay(self.random_payment(payees)))
                   for _ in range(self.rng.randint(4, 16))]
        await asyncio.sleep(self.rng.uniform(0.01, 0.3))
        in_flight = self.card.charges_in_progress
        ledger = self.card.ledger
        await self.card_server.stop(None)
        self.tally.add("charges in flight when killed", in_flight)
        payments = await asyncio.gather(*pending)
        unknown = sum(1 for p in payments if p for l in p.legs
                      if l.status == pb.LEG_STATUS_UNKNOWN)
        self.tally.add("legs UNKNOWN while the channel was down", unknown)
        await asyncio.sleep(self.rng.uniform(0, 1))
        self.card_server, self.card, _ = await start_simulator(
            "card", SimulatorBehaviour(), f"127.0.0.1:{self.card_port}", ledger=ledger)
        await self.settled()

    async def compensate(self) -> None:
        failing = self.rng.choice([0, 1, limits.SETTLEMENT_TRIES + 1])
        self.card.faults.fail_reversals(failing)
        requests = [pb.PayRequest(
            idempotency_key=self.key("aon"), payer="acct_reliability_0001",
            legs=[leg(f"reversal_fails_once_{self.keys}", self.rng.randint(1, 9_999), "card"),
                  leg(f"decline_card_declined_{self.keys}", 100, self.rng.choice(["card", ""]))])
            for _ in range(self.rng.randint(2, 8))]
        payments = await asyncio.gather(*(self.pay(r) for r in requests))
        await self.settled()
        for payment in payments:
            if payment is None:
                continue
            final = (await self.stub.GetPayment(pb.GetPaymentRequest(
                payment_id=payment.payment_id), timeout=10)).payment
            if final.status != pb.PAYMENT_STATUS_FAILED or final.failure.reason != "DECLINED" \
                    or final.legs[0].status != pb.LEG_STATUS_VOIDED:
                self.violation(f"compensation of {final.payment_id} ended "
                               f"{pb.PaymentStatus.Name(final.status)} / {final.failure.reason}")
            else:
                self.tally.add("compensations completed")

    async def pay_race(self) -> None:
        self.card.faults.hold_charges()
        request = pb.PayRequest(idempotency_key=self.key("race"), payer="acct_reliability_0001",
                                legs=[leg("merchant_race_0", self.rng.randint(1, 9_999), "card"),
                                      leg("merchant_race_1", self.rng.randint(1, 9_999))])
        answers: list[pb.Payment] = []

        async def caller() -> None:
            for _ in range(200):
                try:
                    answers.append((await self.stub.Pay(request, timeout=30)).payment)
                    return
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.ABORTED:
                        self.violation(f"a retry of one key got {error.code().name}")
                        return
                    self.tally.add("pay retries turned away (ABORTED)")
                    await asyncio.sleep(0.1)
            self.violation("a retry of one key never got its answer")

        callers = [asyncio.ensure_future(caller()) for _ in range(RACE_CALLERS)]
        await asyncio.sleep(self.rng.uniform(0, 0.3))
        self.card.faults.release_charges()
        await asyncio.gather(*callers)
        if len(answers) != RACE_CALLERS or any(a != answers[0] for a in answers):
            different = next((a for a in answers if a != answers[0]), None)
            self.violation(f"{len(answers)} answers to one key, not all equal: "
                           f"{answers[0]} vs {different}")
        elif answers:
            payment_id = answers[0].payment_id
            rows = sqlite_rows(self.database)
            count = rows(f"SELECT count(*) FROM payments WHERE idempotency_key = "
                         f"'{request.idempotency_key}'")[0][0]
            requests = [self.ledgers()[l.channel].charge_requests.get(f"{payment_id}.{l_i}", 0)
                        for l_i, l in enumerate(answers[0].legs)]
            if count != 1 or requests != [1] * len(answers[0].legs):
                self.violation(f"one key made {count} payments, charge requests {requests}")
            self.tally.add("pay races (64 callers)")
        await self.settled()

    async def refund_race(self) -> None:
        captured = self.rng.randint(500, 5_000)
        payment = await self.pay(pb.PayRequest(
            idempotency_key=self.key("refundable"), payer="acct_reliability_0001",
            legs=[leg("merchant_refund", captured, self.rng.choice(["card", "wallet"]))]))
        if payment is None or payment.status != pb.PAYMENT_STATUS_SUCCEEDED:
            self.violation("the payment to refund did not succeed")
            return
        amounts = [self.rng.randint(1, captured // 16) for _ in range(RACE_CALLERS)]

        async def refund(i: int, amount: int) -> int:
            try:
                await self.stub.RefundPayment(pb.RefundPaymentRequest(
                    payment_id=payment.payment_id, idempotency_key=f"r{i}",
                    legs=[pb.RefundLeg(leg_index=0, amount=money("USD", amount))]), timeout=30)
                return amount
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    self.violation(f"a concurrent refund got {error.code().name}")
                return 0

        made = await asyncio.gather(*(refund(i, a) for i, a in enumerate(amounts)))
        refunded = sum(made)
        at_channel = self.ledgers()[payment.legs[0].channel].get(
            f"{payment.payment_id}.0").refunded_minor
        if refunded > captured or at_channel != refunded:
            self.violation(f"refunded {refunded} (channel {at_channel}) of {captured}")
        self.tally.add("refund races (64 refunds)")
        self.tally.add("refunds made", sum(1 for amount in made if amount))
        self.tally.add("refunds refused past the capture", sum(1 for amount in made if not amount))
        await self.settled()

    async def batch_race(self) -> None:
        items = [bpb.BatchTransaction(reference=f"r{i}", payee=f"payee_{self.run}_{i}",
                                      amount=money("USD", self.rng.randint(1, 9_999)),
                                      channel="card")
                 for i in range(self.rng.randint(20, 200))]
        batch_id = self.key("batch")
        head = bpb.SubmitBatchRequest(header=bpb.BatchHeader(
            batch_id=batch_id, payer="acct_reliability_0001", max_group_size=10, parallelism=2))
        body = [bpb.SubmitBatchRequest(transactions=bpb.BatchTransactions(transactions=items))]
        dropped = self.rng.random() < 0.5
        if dropped:  # a first stream drops part way, then everyone resubmits at once
            self.card.behaviour = SimulatorBehaviour(latency_ms=self.rng.uniform(5, 40))
            call = self.batches.SubmitBatch(iter([head, *body]), timeout=60)
            await call.read()
            call.cancel()
        else:
            self.card.faults.hold_charges()

        async def stream() -> dict[str, str] | None:
            for _ in range(600):
                results: dict[str, str] = {}
                try:
                    call = self.batches.SubmitBatch(iter([head, *body]), timeout=60)
                    async for answer in call:
                        kind = answer.WhichOneof("kind")
                        told = answer.group.items if kind == "group" else \
                            answer.already_processed.items if kind == "already_processed" else []
                        for result in told:
                            if result.reference in results:
                                self.violation(f"{result.reference} told twice on one stream")
                            results[result.reference] = result.channel_reference
                    return results
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.ABORTED:
                        self.violation(f"a batch stream got {error.code().name}: "
                                       f"{error.details()}")
                        return None
                    self.tally.add("batch streams turned away (ABORTED)")
                    await asyncio.sleep(0.05)
            self.violation("a batch stream never got through")
            return None

        streams = [asyncio.ensure_future(stream()) for _ in range(BATCH_STREAMS)]
        if not dropped:
            await asyncio.sleep(self.rng.uniform(0.05, 0.3))
            self.card.faults.release_charges()
        answers = [a for a in await asyncio.gather(*streams) if a is not None]
        self.card.behaviour = SimulatorBehaviour()
        captured = Counter(c.payee for c in self.card.ledger.captured()
                           if c.payee.startswith(f"payee_{self.run}_"))
        if captured != Counter(item.payee for item in items):
            self.violation(f"batch of {len(items)}: {sum(captured.values())} captures, "
                           f"{sum(1 for n in captured.values() if n > 1)} paid twice")
        if any(a != answers[0] or len(a) != len(items) for a in answers):
            self.violation("batch streams disagree on the results")
        self.tally.add("batch races (8 streams)")
        self.tally.add("batch items", len(items))
        await self.settled()


SCENARIOS = ("spike", "burst", "hang", "kill", "compensate", "pay_race", "refund_race",
             "batch_race")


async def one_run(run: int, seed: int, tally: Tally, scenarios: tuple[str, ...]) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder:
        rig = Rig(run, rng, tally, Path(folder))
        await rig.start()
        try:
            for name in scenarios:
                rig.scenario = name
                await getattr(rig, name)()
                tally.add(f"scenario {name}")
        finally:
            await rig.stop()


async def main_async(args: argparse.Namespace) -> Tally:
    tally = Tally()
    scenarios = tuple(args.scenarios.split(",")) if args.scenarios else SCENARIOS
    for run in range(args.runs):
        started = time.monotonic()
        await one_run(run, args.seed + run, tally, scenarios)
        print(f"run {run + 1}/{args.runs} (seed {args.seed + run}) "
              f"{time.monotonic() - started:.1f} s, violations so far {len(tally.violations)}",
              flush=True)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1, help="run i uses seed + i")
    parser.add_argument("--scenarios", default="",
                        help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--log-level", default="critical")
    args = parser.parse_args()
    configure_logging(args.log_level)
    started = time.monotonic()
    tally = asyncio.run(main_async(args))
    print(f"\n{args.runs} runs, seeds {args.seed}..{args.seed + args.runs - 1}, "
          f"{time.monotonic() - started:.0f} s")
    for what, count in sorted(tally.counts.items()):
        print(f"  {what:45} {count:>8}")
    print(f"  {'violations':45} {len(tally.violations):>8}")
    for violation in tally.violations[:50]:
        print(f"VIOLATION {violation}")
    sys.exit(1 if tally.violations else 0)


if __name__ == "__main__":
    main()
