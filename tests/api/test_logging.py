"""One structured event per payment and per leg, ids bound, no account numbers."""

from __future__ import annotations

import structlog
from structlog.testing import capture_logs

from tests.conftest import leg, pay_request


async def test_one_event_per_payment_and_per_leg_without_account_numbers(paygrid) -> None:
    payer, payee = "acct_000012345678", "merchant_998877665544"
    # The ids come from contextvars bound once per payment, as in production.
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        payment = (await paygrid.stub.Pay(pay_request("k-log", leg(payee), leg(payee),
                                                      payer=payer))).payment
    legs = [e for e in events if e["event"] == "leg.completed"]
    payments = [e for e in events if e["event"] == "payment.completed"]
    assert len(legs) == 2 and len(payments) == 1
    for event in legs + payments:
        assert event["payment_id"] == payment.payment_id
        assert event["idempotency_key"] == "k-log"
    assert {e["leg_index"] for e in legs} == {0, 1}
    assert all(e["payee"] == "****5544" for e in legs)
    flat = repr(events)
    assert payer not in flat and payee not in flat
