"""Connections are closed after max_connection_age (clients reconnect, so a
load balancer can spread them over new replicas); calls go on working."""

from __future__ import annotations

import asyncio

import grpc

from paygrid.v1 import payment_service_pb2 as pb
from tests.conftest import pay_request

OUTCOME_TIMEOUT_S = 60


async def test_an_old_connection_is_closed_and_the_client_reconnects(start_paygrid) -> None:
    aged = await start_paygrid(max_connection_age_ms=300, max_connection_age_grace_ms=100)
    lasting = await start_paygrid()  # the default age: 5 minutes
    for harness in (aged, lasting):
        assert (await harness.stub.Pay(pay_request("k-1"))).payment.status == \
            pb.PAYMENT_STATUS_SUCCEEDED
    # Not asked of the aged one: under load its Pay may outlast its 300 ms
    # (then it is IDLE already, which the wait below accepts at once).
    assert lasting.channel.get_state() == grpc.ChannelConnectivity.READY
    # The aged connection's end is an event the channel reports: waited on,
    # not slept for (the timeout only ends a test that went wrong).
    await asyncio.wait_for(aged.channel.wait_for_state_change(grpc.ChannelConnectivity.READY),
                           OUTCOME_TIMEOUT_S)
    assert aged.channel.get_state() == grpc.ChannelConnectivity.IDLE  # the server sent GOAWAY
    assert lasting.channel.get_state() == grpc.ChannelConnectivity.READY
    assert (await aged.stub.Pay(pay_request("k-2"))).payment.status == \
        pb.PAYMENT_STATUS_SUCCEEDED
