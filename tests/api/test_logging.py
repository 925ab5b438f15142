"""One structured event per payment, its legs inside it, ids bound, no account numbers."""

from __future__ import annotations

import structlog
from structlog.testing import capture_logs

from tests.conftest import leg, pay_request


async def test_one_event_per_payment_with_its_legs_and_without_account_numbers(paygrid) -> None:
    payer, payee = "acct_000012345678", "merchant_998877665544"
    # The ids come from contextvars bound once per payment, as in production.
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        payment = (await paygrid.stub.Pay(pay_request("k-log", leg(payee), leg(payee),
                                                      payer=payer))).payment
    mine = [e for e in events if e.get("payment_id") == payment.payment_id]
    # One line a payment: a line of its own per leg cost the event loop
    # about 10 us a leg (docs/performance.md, "Pay's event loop").
    assert [e["event"] for e in mine] == ["payment.completed"]
    [event] = mine
    assert event["idempotency_key"] == "k-log"
    assert event["status"] == "SUCCEEDED"
    assert [(e["index"], e["payee"], e["status"], e["attempts"], e["failure"])
            for e in event["legs"]] == [(0, "****5544", "SUCCEEDED", 1, None),
                                        (1, "****5544", "SUCCEEDED", 1, None)]
    for logged, sent in zip(event["legs"], payment.legs):
        assert logged["channel"] == sent.channel
        assert logged["latency_ms"] >= 0
    flat = repr(events)
    assert payer not in flat and payee not in flat


async def test_a_failed_legs_reason_is_in_the_payments_event(paygrid) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        payment = (await paygrid.stub.Pay(pay_request(
            "k-log-declined", leg("merchant_1"), leg("decline_merchant_2")))).payment
    [event] = [e for e in events if e.get("payment_id") == payment.payment_id
               and e["event"] == "payment.completed"]
    assert event["status"] == "FAILED" and event["failure"] == "DECLINED"
    assert [(e["index"], e["status"], e["failure"]) for e in event["legs"]] == [
        (0, "VOIDED", "OTHER_LEG_FAILED"), (1, "FAILED", "DECLINED")]
