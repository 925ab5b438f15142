"""Reconciles channels' books (a simulator's ledger, or what any channel's
ListCharges returned) with paygrid's database.

What an operator does with a channel's settlement report, as one check the
fault tests and scripts/reliability_faults run after every scenario and
`paygrid-server reconcile` runs against live channels:
  - every charge a channel holds money for belongs to a leg or batch item
    paygrid recorded as SUCCEEDED on that channel, with the same charge id,
    currency and amount ("nothing charged without a record");
  - every leg or item paygrid recorded as SUCCEEDED is captured at its
    channel under that charge id ("no success without a charge");
  - what a channel refunded on a charge is what paygrid recorded (give or
    take refunds still pending);
  - nothing is left unsettled (a PROCESSING payment, an UNKNOWN leg or item,
    a PENDING refund) when `settled` is asked for.
Channel keys are paygrid's own: `<payment_id>.<leg_index>` for legs and
`<batch uid>.<seq>.<attempt>` for batch items. The database is read through
a `rows(sql)` function, so either storage engine can be checked (the SQL is
common to SQLite and PostgreSQL); `sqlite_rows` reads a SQLite file.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

from paygrid_server.domain.ports.payment_channel import ChargeRecord, ChargeStatus
from paygrid_server.simulator.channel_ledger import SimulatedCharge


@dataclass(frozen=True, slots=True)
class _Record:
    what: str  # for messages: "leg pay_x.0" / "batch item bat_x.3"
    key: str
    status: str
    channel: str
    channel_reference: str
    currency: str
    amount_minor: int
    refunded_minor: int = 0
    refund_pending_minor: int = 0


class DifferenceKind(Enum):
    EXTRA = "extra"  # the channel holds money paygrid has no success for
    MISSING = "missing"  # paygrid holds a success the channel has no capture for
    MISMATCHED = "mismatched"  # both hold it, with another amount, id or refund
    UNSETTLED = "unsettled"  # paygrid has not finished it (only when asked to be settled)


@dataclass(frozen=True, slots=True)
class Difference:
    kind: DifferenceKind
    channel: str
    detail: str

    def __str__(self) -> str:
        return self.detail


@dataclass
class Reconciliation:
    violations: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    captured_charges: int = 0  # charges holding money, over every channel
    recorded_successes: int = 0  # legs and batch items paygrid holds as SUCCEEDED
    unsettled: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def differ(self, kind: DifferenceKind, channel: str, detail: str) -> None:
        self.differences.append(Difference(kind, channel, detail))
        self.violations.append(detail)

    def __str__(self) -> str:
        return "\n".join(self.violations) or (
            f"ok: {self.captured_charges} charges held, {self.recorded_successes} recorded")


def _holds_money(charge: SimulatedCharge | ChargeRecord) -> bool:
    return charge.status is ChargeStatus.CAPTURED and charge.amount is not None and \
        charge.refunded_minor < charge.amount.amount_minor


Rows = Callable[[str], Sequence[tuple]]


def sqlite_rows(database: Path) -> Rows:
    def rows(sql: str) -> list[tuple]:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            return db.execute(sql).fetchall()
    return rows


def _records(rows: Rows) -> tuple[dict[str, _Record], list[str]]:
    """paygrid's records by channel key, and what is still unsettled."""
    legs = rows(
        "SELECT payment_id || '.' || leg_index, status, channel, channel_reference, currency,"
        " amount_minor, refunded_minor, refund_pending_minor FROM payment_legs")
    items = rows(
        "SELECT batch_uid || '.' || seq || '.' || attempt, status, channel, channel_reference,"
        " currency, amount_minor FROM batch_item_charges")
    unsettled = [f"payment {pid} is PROCESSING" for (pid,) in rows(
        "SELECT payment_id FROM payments WHERE status = 'PROCESSING'")]
    unsettled += [f"refund {rid} is PENDING" for (rid,) in rows(
        "SELECT refund_id FROM refunds WHERE status = 'PENDING'")]
    records = {row[0]: _Record(f"leg {row[0]}", *row) for row in legs}
    records.update({row[0]: _Record(f"batch item {row[0]}", *row) for row in items})
    unsettled += [f"{r.what} is {r.status}" for r in records.values()
                  if r.status in ("UNKNOWN", "PROCESSING", "PENDING")]
    return records, unsettled


class ChannelBooks(Protocol):
    """A channel's charges by paygrid's key: a simulator's ChannelLedger, or
    what a channel's ListCharges returned (ChargeRecords)."""

    @property
    def charges(self) -> Mapping[str, SimulatedCharge | ChargeRecord]: ...


def reconcile(rows: Rows, ledgers: Mapping[str, ChannelBooks],
              settled: bool = True) -> Reconciliation:
    """Checks the ledgers (by channel name) against paygrid's database.
    `settled`: anything paygrid has not finished is a difference too; else
    a charge held for a leg or item paygrid still settles is excused."""
    records, unsettled = _records(rows)
    result = Reconciliation(unsettled=unsettled)
    if settled:
        for what in unsettled:
            result.differ(DifferenceKind.UNSETTLED, "", f"unsettled: {what}")

    for channel, ledger in ledgers.items():
        for key, charge in list(ledger.charges.items()):
            record = records.get(key)
            if not _holds_money(charge):
                continue
            result.captured_charges += 1
            assert charge.amount is not None
            if record is None:
                result.differ(DifferenceKind.EXTRA, channel,
                              f"{channel}: charge {charge.charge_id} ({key}, "
                              f"{charge.amount.amount_minor} {charge.amount.currency}) "
                              "has no record in paygrid")
                continue
            if record.status != "SUCCEEDED" or record.channel != channel:
                if not (settled is False and record.status in ("UNKNOWN", "PROCESSING")):
                    result.differ(DifferenceKind.EXTRA, channel,
                                  f"{channel}: charge {charge.charge_id} holds money but "
                                  f"paygrid holds {record.what} as {record.status} "
                                  f"on {record.channel!r}")
                continue
            if (record.channel_reference, record.currency, record.amount_minor) != (
                    charge.charge_id, charge.amount.currency, charge.amount.amount_minor):
                result.differ(
                    DifferenceKind.MISMATCHED, channel,
                    f"{channel}: charge {charge.charge_id} {charge.amount.amount_minor} "
                    f"{charge.amount.currency} but paygrid recorded {record.what} as "
                    f"{record.channel_reference} {record.amount_minor} {record.currency}")

    for record in records.values():
        if record.status != "SUCCEEDED":
            continue
        result.recorded_successes += 1
        ledger = ledgers.get(record.channel)
        if ledger is None:
            continue  # a channel this check was not given
        charge = ledger.charges.get(record.key)
        if charge is None or charge.status is not ChargeStatus.CAPTURED or \
                charge.charge_id != record.channel_reference:
            result.differ(DifferenceKind.MISSING, record.channel,
                          f"{record.what} is SUCCEEDED on {record.channel!r} as "
                          f"{record.channel_reference} but the channel holds "
                          f"{'nothing' if charge is None else charge.status.value}")
            continue
        low, high = record.refunded_minor, record.refunded_minor + record.refund_pending_minor
        if not low <= charge.refunded_minor <= high:
            result.differ(DifferenceKind.MISMATCHED, record.channel,
                          f"{record.what}: the channel refunded {charge.refunded_minor}, "
                          f"paygrid recorded {low} (+{high - low} pending)")
    return result
