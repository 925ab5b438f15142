"""A hung channel does not hold start-up hostage (issue 14, item 9): a server
restarted with payments left PROCESSING serves at once and settles them in
the background; meanwhile a same-key retry is told REQUEST_IN_PROGRESS and a
refund PAYMENT_NOT_CAPTURED; once the channel is back they become final.

Deterministic: the channel is frozen (every call hangs, answering nothing)
until the test thaws it, however long that takes; the recovery keeps its
payments claimed for as long as the channel is away.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from paygrid_server.domain.ports.payment_channel import ChargeStatus
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour
from tests.conftest import leg, pay_request, pay_until_final, rich_status
from tests.support.crash_rig import crash_rig

PAYMENTS = 4


async def test_a_restart_serves_at_once_and_recovers_in_the_background(tmp_path: Path) -> None:
    async with crash_rig(tmp_path, ("card",), SimulatorBehaviour()) as rig:
        card = rig.simulators["card"]
        requests = [pay_request(f"bg-{i}", leg(f"payee_{i}", "EUR", 1_000 + i))
                    for i in range(PAYMENTS)]
        # Killed with every payment's charge at the channel, which then loses them.
        card.faults.hold_charges()
        async with rig.channel() as channel:
            calls = [pb_grpc.PaymentServiceStub(channel).Pay(r, timeout=30) for r in requests]
            await card.faults.held(calls=PAYMENTS)
            rig.kill()
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError):
                    await call
        assert rig.count_by_status("payments") == {"PROCESSING": PAYMENTS}
        card.faults.release_charges(drop=True)
        await card.finish_late_work()

        card.faults.freeze()
        await rig.restart()  # returns once health says SERVING: the channel answered nothing
        assert card.ledger.charges == {}
        async with rig.channel() as channel:
            stub = pb_grpc.PaymentServiceStub(channel)
            for request in requests:
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await stub.Pay(request, timeout=10)
                assert error.value.code() == grpc.StatusCode.ABORTED
                details = rich_status(error.value)
                assert details["ErrorInfo"].reason == "REQUEST_IN_PROGRESS"
                assert details["RetryInfo"].retry_delay.ToMilliseconds() > 0
            listed = (await stub.ListPayments(pb.ListPaymentsRequest(), timeout=10)).payments
            assert [p.status for p in listed] == [pb.PAYMENT_STATUS_PROCESSING] * PAYMENTS
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.RefundPayment(pb.RefundPaymentRequest(
                    payment_id=listed[0].payment_id, idempotency_key="r-bg"), timeout=10)
            assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert rich_status(error.value)["ErrorInfo"].reason == "PAYMENT_NOT_CAPTURED"

            card.faults.thaw()
            payments = [await pay_until_final(stub, request) for request in requests]

        assert [p.status for p in payments] == [pb.PAYMENT_STATUS_SUCCEEDED] * PAYMENTS
        captured = sorted((c.payee, c.amount.amount_minor) for c in card.ledger.captured())
        assert captured == [(f"payee_{i}", 1_000 + i) for i in range(PAYMENTS)]
        assert [c for c in card.ledger.charges.values() if c.status is ChargeStatus.VOIDED] == []
