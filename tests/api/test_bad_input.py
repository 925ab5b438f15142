"""Every bad Pay input: INVALID_ARGUMENT naming the field, and nothing stored."""

from __future__ import annotations

import grpc
import pytest

from paygrid.v1 import payment_service_pb2 as pb
from tests.conftest import leg, money, pay_request, rich_status

INT64_MAX = 2**63 - 1


def _with_leg(**changes) -> pb.PayRequest:
    request = pay_request("k-bad")
    for name, value in changes.items():
        if name == "amount":
            request.legs[0].amount.CopyFrom(value)
        else:
            setattr(request.legs[0], name, value)
    return request


def _no_amount() -> pb.PayRequest:
    request = pay_request("k-bad")
    request.legs[0].ClearField("amount")
    return request


BAD_REQUESTS = {
    "missing idempotency key": (pay_request(""), "idempotency_key"),
    "idempotency key with spaces": (pay_request("has space"), "idempotency_key"),
    "oversize idempotency key": (pay_request("k" * 256), "idempotency_key"),
    "missing payer": (pay_request("k-bad", payer=""), "payer"),
    "oversize payer": (pay_request("k-bad", payer="p" * 129), "payer"),
    "no legs": (pb.PayRequest(idempotency_key="k-bad", payer="acct_1"), "legs"),
    "17 legs": (pay_request("k-bad", *(leg() for _ in range(17))), "legs"),
    "missing amount": (_no_amount(), "legs[0].amount"),
    "zero amount": (_with_leg(amount=money("USD", 0)), "legs[0].amount.amount_minor"),
    "negative amount": (_with_leg(amount=money("USD", -5)), "legs[0].amount.amount_minor"),
    "amount overflow": (_with_leg(amount=money("USD", INT64_MAX)), "legs[0].amount.amount_minor"),
    "missing currency": (_with_leg(amount=money("", 100)), "legs[0].amount.currency"),
    "unknown currency": (_with_leg(amount=money("XYZ", 100)), "legs[0].amount.currency"),
    "lower-case currency": (_with_leg(amount=money("usd", 100)), "legs[0].amount.currency"),
    "non-payable ISO code": (_with_leg(amount=money("XAU", 100)), "legs[0].amount.currency"),
    "wrong minor units (JPY has none)": (_with_leg(amount=money("JPY", 100, minor_units=2)),
                                         "legs[0].amount.minor_units"),
    "wrong minor units (KWD has 3)": (_with_leg(amount=money("KWD", 100, minor_units=2)),
                                      "legs[0].amount.minor_units"),
    "missing payee": (_with_leg(payee=""), "legs[0].payee"),
    "oversize payee": (_with_leg(payee="m" * 129), "legs[0].payee"),
    "control character in payee": (_with_leg(payee="merchant\n1"), "legs[0].payee"),
    "oversize reference": (_with_leg(reference="r" * 141), "legs[0].reference"),
    "unknown channel": (_with_leg(channel="carrier_pigeon"), "legs[0].channel"),
    "channel that does not take the currency": (_with_leg(channel="wallet",
                                                          amount=money("GBP", 100)),
                                                "legs[0].channel"),
    "unknown mode": (pay_request("k-bad", mode=7), "mode"),
    "too much metadata": (pay_request("k-bad", metadata={f"k{i}": "v" for i in range(33)}),
                          "metadata"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
async def test_bad_input_is_invalid_argument_with_the_field_and_nothing_is_stored(
        paygrid, case) -> None:
    request, field = BAD_REQUESTS[case]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.Pay(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    details = rich_status(error.value)
    fields = [v.field for v in details["BadRequest"].field_violations]
    assert field in fields, fields
    assert details["ErrorInfo"].domain == "paygrid"
    assert paygrid.rows("SELECT count(*) FROM payments") == [(0,)]
    assert paygrid.rows("SELECT count(*) FROM payment_legs") == [(0,)]
    assert paygrid.ledger("card").charge_requests == {}


async def test_every_violation_is_reported_at_once(paygrid) -> None:
    request = pb.PayRequest(idempotency_key="", payer="",
                            legs=[leg(amount_minor=0), leg(currency="ABC")])
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await paygrid.stub.Pay(request)
    fields = {v.field for v in rich_status(error.value)["BadRequest"].field_violations}
    assert fields == {"idempotency_key", "payer", "legs[0].amount.amount_minor",
                      "legs[1].amount.currency"}


async def test_correct_minor_units_are_accepted(paygrid) -> None:
    request = pay_request("k-jpy", leg(currency="JPY", amount_minor=500))
    request.legs[0].amount.minor_units = 0
    payment = (await paygrid.stub.Pay(request)).payment
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
