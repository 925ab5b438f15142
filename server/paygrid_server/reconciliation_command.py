"""`paygrid-server reconcile`: paygrid's records against every remote
channel's own (its ListCharges settlement report), as an operator runs it
daily. Reports charges a channel holds that paygrid has no success for
(extra), successes a channel has no capture for (missing) and both holding
another amount, charge id or refund (mismatched). Exit 0: no difference;
1: differences; 2: a channel or the database could not be read, or no
channel can be asked (all are simulators inside the server process).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from dataclasses import dataclass

import asyncpg

from paygrid_server.channels.channel_from_config import grpc_channel_for
from paygrid_server.config import ServerConfig
from paygrid_server.domain.ports.payment_channel import ChannelCallError, ChargeRecord
from paygrid_server.ledger_reconciliation import (
    Reconciliation,
    Rows,
    reconcile,
    sqlite_rows,
)

LIST_CHARGES_TIMEOUT_MS = 120_000  # a whole settlement report, once a day


@dataclass(frozen=True, slots=True)
class ReportedCharges:
    """One channel's ListCharges answer, by paygrid's key."""
    charges: dict[str, ChargeRecord]


async def channel_books(config: ServerConfig) -> tuple[dict[str, ReportedCharges], list[str]]:
    """Each remote channel's charges; and the channels that cannot be asked."""
    books: dict[str, ReportedCharges] = {}
    skipped: list[str] = []
    for channel in config.channels:
        if channel.target is None:
            skipped.append(f"{channel.name}: its simulator runs inside the server process; "
                           "give the channel a target (scripts/channel-simulator) to reconcile it")
            continue
        remote = grpc_channel_for(channel, channel.target)
        try:
            records = await remote.list_charges(LIST_CHARGES_TIMEOUT_MS)
        finally:
            await remote.close()
        books[channel.name] = ReportedCharges({r.idempotency_key: r for r in records})
    return books, skipped


def postgres_rows(dsn: str) -> Rows:
    """A blocking rows(sql) over one connection, for this one-shot command."""
    loop = asyncio.new_event_loop()
    connection = loop.run_until_complete(asyncpg.connect(dsn))

    def rows(sql: str) -> list[tuple]:
        return [tuple(row) for row in loop.run_until_complete(connection.fetch(sql))]

    return rows


def run_reconciliation(config: ServerConfig, output: str) -> int:
    try:
        books, skipped = asyncio.run(channel_books(config))
    except ChannelCallError as error:
        print(f"paygrid-server reconcile: {error}", file=sys.stderr)
        return 2
    if not books:
        for line in skipped:
            print(f"SKIPPED    {line}")
        print("paygrid-server reconcile: no channel could be reconciled", file=sys.stderr)
        return 2
    rows = postgres_rows(config.postgres_dsn) if config.postgres_dsn else sqlite_rows(
        config.database_path)
    # Legs and items paygrid is still settling are not differences yet.
    result = reconcile(rows, books, settled=False)
    _print(result, books, skipped, output)
    return 0 if result.ok else 1


def _print(result: Reconciliation, books: dict[str, ReportedCharges], skipped: list[str],
           output: str) -> None:
    kinds = Counter(d.kind.value for d in result.differences)
    if output == "json":
        print(json.dumps({
            "channels": sorted(books), "skipped": skipped,
            "charges_held": result.captured_charges,
            "successes_recorded": result.recorded_successes,
            "unsettled": result.unsettled,
            "differences": [{"kind": d.kind.value, "channel": d.channel, "detail": d.detail}
                            for d in result.differences]}))
        return
    for difference in result.differences:
        print(f"{difference.kind.value.upper():<10} {difference.detail}")
    for line in skipped:
        print(f"SKIPPED    {line}")
    for what in result.unsettled:
        print(f"UNSETTLED  {what} (not a difference yet: paygrid is settling it)")
    print(f"{len(books)} channels, {result.captured_charges} charges held, "
          f"{result.recorded_successes} successes recorded: "
          + (", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
             if kinds else "no differences"))
