"""A ChargeBatch answer read as columns: it must pair up with the request key
by key, name only known statuses, and give a decline's whole record."""

from __future__ import annotations

import pytest

from paygrid.channel.v1 import payment_channel_pb2 as cpb
from paygrid.type.v1 import money_pb2
from paygrid_server.channels.grpc_payment_channel import charge_batch_records, charge_batch_request
from paygrid_server.domain.model.money import Money
from paygrid_server.domain.ports.bulk_charges import ChargeOrders
from paygrid_server.domain.ports.payment_channel import ChannelUnavailable, ChargeStatus

ORDERS = ChargeOrders(["b.1.1", "b.2.1"], "payer", ["m1", "m2"],
                      [Money("EUR", 100), Money("USD", 250)], ["r1", "r2"])


def _charge(key: str, status: int = cpb.CHARGE_STATUS_CAPTURED, **fields) -> cpb.Charge:
    return cpb.Charge(idempotency_key=key, charge_id=f"ch_{key}", status=status, **fields)


def test_the_request_carries_each_order_in_order() -> None:
    request = charge_batch_request(ORDERS)
    assert [(c.idempotency_key, c.payer, c.payee, c.reference, c.amount.currency,
             c.amount.amount_minor) for c in request.charges] == [
        ("b.1.1", "payer", "m1", "r1", "EUR", 100), ("b.2.1", "payer", "m2", "r2", "USD", 250)]


def test_captures_are_columns_and_a_decline_a_whole_record() -> None:
    records = charge_batch_records(ORDERS, cpb.ChargeBatchResponse(charges=[
        _charge("b.1.1", amount=money_pb2.Money(currency="EUR", amount_minor=100)),
        _charge("b.2.1", cpb.CHARGE_STATUS_DECLINED, decline_code="do_not_honor",
                decline_message="no")]))
    assert records.charge_ids == ["ch_b.1.1", "ch_b.2.1"]
    assert records.statuses == [ChargeStatus.CAPTURED, ChargeStatus.DECLINED]
    assert len(records) == 2
    assert records[0].amount == Money("EUR", 100)
    assert (records[1].decline_code, records[1].decline_message) == ("do_not_honor", "no")
    assert records[-1] == records[1]
    assert [r.idempotency_key for r in records] == ["b.1.1", "b.2.1"]
    with pytest.raises(IndexError):
        records[2]


@pytest.mark.parametrize("keys", [["b.1.1"], ["b.2.1", "b.1.1"], ["b.1.1", "b.2.1", "b.3.1"]])
def test_an_answer_that_does_not_pair_up_is_no_answer(keys) -> None:
    with pytest.raises(ChannelUnavailable, match="do not match"):
        charge_batch_records(ORDERS, cpb.ChargeBatchResponse(charges=[_charge(k) for k in keys]))


def test_an_unknown_status_is_no_answer() -> None:
    with pytest.raises(ChannelUnavailable, match="unknown charge status 42"):
        charge_batch_records(ORDERS, cpb.ChargeBatchResponse(
            charges=[_charge("b.1.1"), _charge("b.2.1", 42)]))
