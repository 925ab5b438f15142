"""A configured remote channel as a GrpcPaymentChannel (TLS when its CA is
set), for the server and for commands that talk to channels directly."""

from __future__ import annotations

from typing import Sequence

import grpc

from paygrid_server.channels.grpc_payment_channel import (
    CallObserver,
    GrpcPaymentChannel,
    ignore_call,
)
from paygrid_server.config import ChannelConfig
from paygrid_server.tls_credentials import channel_credentials


def grpc_channel_for(channel: ChannelConfig, target: str,
                     interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
                     observe_call: CallObserver = ignore_call) -> GrpcPaymentChannel:
    credentials = None
    if channel.tls_ca_file is not None:
        credentials = channel_credentials(channel.tls_ca_file, channel.tls_cert_file,
                                          channel.tls_key_file, f"channels.{channel.name}")
    return GrpcPaymentChannel(channel.name, target, credentials, channel.tls_server_name,
                              interceptors, observe_call)
