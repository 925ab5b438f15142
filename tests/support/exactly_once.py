"""Money lost and money taken twice, counted from the clients' side: what
they sent and what paygrid told them, against the channels' own ledgers.

The database side (every stored SUCCEEDED record is one capture with the
same charge id and amount, and the reverse) is
paygrid_server/ledger_reconciliation.py; this adds what only the
client knows: which items it sent (one never stored is lost too) and which
answers it was given (an answer must not change after a crash).

lost: payable money that did not move, or an answer of SUCCEEDED with no
capture behind it. duplicated: a second capture for one item or leg, or a
capture for something the client was told did not succeed or never sent.
mismatched: an answer naming another charge, channel or amount than the
capture. Voided charges and fences are fine: they hold no money.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from paygrid.v1 import batch_service_pb2 as batch_pb
from paygrid.v1 import payment_service_pb2 as pay_pb
from paygrid_server.domain.ports.payment_channel import ChargeStatus
from paygrid_server.simulator.channel_ledger import ChannelLedger, SimulatedCharge
from paygrid_server.ledger_reconciliation import Reconciliation

DECLINE_PREFIX = "decline_"
DECLINE_REASONS = ("DECLINED", "INSUFFICIENT_FUNDS")  # both are declines


@dataclass
class ExactlyOnce:
    checked: int = 0  # items or legs
    captures: int = 0  # charges holding money, over every ledger given
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.mismatched)

    def describe(self, limit: int = 10) -> str:
        lines = [f"checked {self.checked:,}, captures {self.captures:,}: lost {len(self.lost)}, "
                 f"duplicated {len(self.duplicated)}, mismatched {len(self.mismatched)}"]
        for name in ("lost", "duplicated", "mismatched"):
            lines += [f"  {name}: {line}" for line in getattr(self, name)[:limit]]
        return "\n".join(lines)


def _holds_money(charge: SimulatedCharge) -> bool:
    return (charge.status is ChargeStatus.CAPTURED and charge.amount is not None
            and charge.refunded_minor < charge.amount.amount_minor)


def _captures_by(ledgers: Mapping[str, ChannelLedger], key, count: ExactlyOnce
                 ) -> dict[str, list[tuple[str, SimulatedCharge]]]:
    found: dict[str, list[tuple[str, SimulatedCharge]]] = defaultdict(list)
    for name, ledger in ledgers.items():
        for charge in ledger.charges.values():
            if _holds_money(charge):
                found[key(charge)].append((name, charge))
                count.captures += 1
    return found


def count_batch(sent: Iterable[batch_pb.BatchTransaction],
                told: Mapping[str, batch_pb.BatchItemResult],
                ledgers: Mapping[str, ChannelLedger]) -> ExactlyOnce:
    """`sent`: every payee distinct, so a channel's record names its item;
    `decline_` payees are declined by the simulator, every other item must
    be paid exactly once. `told`: the final result of each item, by reference."""
    count = ExactlyOnce()
    items = {tx.payee: tx for tx in sent}
    captured = _captures_by(ledgers, lambda charge: charge.payee, count)
    for payee, tx in items.items():
        count.checked += 1
        ref, captures = tx.reference, captured.get(payee, [])
        result = told.get(ref)
        status = batch_pb.BatchItemStatus.Name(result.status) if result else "never told"
        if len(captures) > 1:
            count.duplicated.append(f"{ref}: captured {len(captures)} times: "
                                    f"{[(n, c.charge_id) for n, c in captures]}")
            continue
        if payee.startswith(DECLINE_PREFIX):
            if captures:
                count.duplicated.append(f"{ref}: a declining payee was captured")
            elif result is None or result.failure.reason not in DECLINE_REASONS:
                count.mismatched.append(f"{ref}: declined, told {status}")
            continue
        if not captures:
            count.lost.append(f"{ref}: not paid (told {status})")
        elif result is None or result.status != batch_pb.BATCH_ITEM_STATUS_SUCCEEDED:
            count.duplicated.append(f"{ref}: captured, told {status}")
        else:
            name, charge = captures[0]
            _compare(count, ref, (result.channel, result.channel_reference, tx.amount.currency,
                                  tx.amount.amount_minor), name, charge)
    for payee, captures in captured.items():
        if payee not in items:
            count.duplicated += [f"capture {c.charge_id} on {n} for {payee!r}: not in the batch"
                                 for n, c in captures]
    return count


def count_payments(told: Iterable[pay_pb.Payment],
                   ledgers: Mapping[str, ChannelLedger]) -> ExactlyOnce:
    """`told`: the final answer of every Pay call. A leg's charges carry the
    key `<payment_id>.<leg_index>` on whatever channel they went to."""
    count = ExactlyOnce()
    captured = _captures_by(ledgers, lambda charge: charge.idempotency_key, count)
    accounted: set[str] = set()
    for payment in told:
        for leg in payment.legs:
            count.checked += 1
            key = f"{payment.payment_id}.{leg.leg_index}"
            accounted.add(key)
            captures = captured.get(key, [])
            status = pay_pb.LegStatus.Name(leg.status)
            if len(captures) > 1:
                count.duplicated.append(f"{key}: captured {len(captures)} times: "
                                        f"{[(n, c.charge_id) for n, c in captures]}")
                continue
            if leg.status != pay_pb.LEG_STATUS_SUCCEEDED:
                if captures:
                    count.duplicated.append(f"{key}: captured ({captures[0][1].charge_id}), "
                                            f"told {status}")
                elif leg.status not in (pay_pb.LEG_STATUS_FAILED, pay_pb.LEG_STATUS_VOIDED):
                    count.mismatched.append(f"{key}: told {status}, not a final leg status")
                continue
            if leg.payee.startswith(DECLINE_PREFIX):
                count.mismatched.append(f"{key}: a declining payee told SUCCEEDED")
            if not captures:
                count.lost.append(f"{key}: told SUCCEEDED ({leg.channel_reference}), "
                                  "no capture at any channel")
                continue
            name, charge = captures[0]
            _compare(count, key, (leg.channel, leg.channel_reference, leg.amount.currency,
                                  leg.amount.amount_minor), name, charge)
    for key, captures in captured.items():
        if key not in accounted:
            count.duplicated += [f"capture {c.charge_id} on {n} with key {key}: "
                                 "no payment leg told of it" for n, c in captures]
    return count


def _compare(count: ExactlyOnce, what: str, told: tuple[str, str, str, int],
             channel: str, charge: SimulatedCharge) -> None:
    """The answer's (channel, charge id, currency, amount) against the capture."""
    assert charge.amount is not None
    at_channel = (channel, charge.charge_id, charge.amount.currency, charge.amount.amount_minor)
    if told != at_channel:
        count.mismatched.append(f"{what}: told {told}, the channel has {at_channel}")


@dataclass(kw_only=True)
class CrashRunVerdict:
    """What every crash run is judged by: the clients' view of exactly once,
    the database against the channels' books, and protocol problems."""

    problems: list[str] = field(default_factory=list)  # protocol differences, not money
    exactly_once: ExactlyOnce = field(default_factory=ExactlyOnce)  # the clients' view
    books: Reconciliation = field(default_factory=Reconciliation)  # the database's view
    wall_s: float = 0.0
    # In the channels' ledgers: captures voided afterwards (a reversal the
    # payee sees) and keys fenced by a Void before any charge (nothing seen).
    voided_captures: int = 0
    fences: int = 0

    def count_voids(self, ledgers: Mapping[str, ChannelLedger]) -> None:
        charges = [c for ledger in ledgers.values() for c in ledger.charges.values()
                   if c.status is ChargeStatus.VOIDED]
        self.fences = sum(c.amount is None for c in charges)
        self.voided_captures = len(charges) - self.fences

    @property
    def ok(self) -> bool:
        return not self.problems and self.exactly_once.ok and self.books.ok

    def verdict_lines(self) -> list[str]:
        kills = max(1, getattr(self, "kill_count", 1))
        lines = ["  " + self.exactly_once.describe().replace("\n", "\n  "),
                 f"  channel ledgers: {self.voided_captures:,} captures voided, "
                 f"{self.fences:,} keys fenced ({self.voided_captures / kills:,.0f} and "
                 f"{self.fences / kills:,.0f} per kill)",
                 f"  books: {self.books}".replace("\n", "\n  ")]
        return lines + [f"  problem: {p}" for p in self.problems[:10]]
