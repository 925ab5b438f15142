"""The ledger-vs-database check (nothing charged without a record,
paygrid_server/ledger_reconciliation.py) for a test's paygrid, on
either storage engine, and any simulators the test started itself."""

from __future__ import annotations

from paygrid_server.simulator.channel_simulator import ChannelSimulator
from paygrid_server.ledger_reconciliation import reconcile


def assert_books_agree(paygrid, *simulators: ChannelSimulator, settled: bool = True) -> None:
    ledgers = {name: sim.ledger for name, (_, sim) in paygrid.app.simulators.items()}
    ledgers.update({sim.ledger.name: sim.ledger for sim in simulators})
    result = reconcile(paygrid.rows, ledgers, settled)
    assert result.ok, f"channel books and paygrid disagree:\n{result}"
