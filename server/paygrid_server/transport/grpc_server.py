"""The gRPC server: paygrid services, standard health checking and reflection."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from paygrid.v1 import batch_service_pb2, batch_service_pb2_grpc
from paygrid.v1 import event_service_pb2, event_service_pb2_grpc
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from paygrid_server.transport import reflection_v1
from paygrid_server.transport.batch_servicer import BatchServicer
from paygrid_server.transport.call_interceptor import CallInterceptor
from paygrid_server.transport.event_servicer import EventServicer
from paygrid_server.transport.payment_servicer import PaymentServicer

# Explicit wire limit: a Pay of 16 legs with full metadata is a few KiB.
MAX_MESSAGE_BYTES = 1 * 1024 * 1024

SERVICE_NAMES = (pb.DESCRIPTOR.services_by_name["PaymentService"].full_name,
                 batch_service_pb2.DESCRIPTOR.services_by_name["BatchService"].full_name,
                 event_service_pb2.DESCRIPTOR.services_by_name["EventService"].full_name)


class GenericHandlersOnly:
    """What the generated add_*Servicer_to_server functions see of the
    server: their handlers are kept as generic handlers only, not also as
    grpc's registered methods. grpc.aio keeps one waiting request task per
    registered method and, for every call, asyncio.wait()s on all of them
    (16 methods here: a callback added to and removed from each, per call;
    2.5% of the event loop's samples under Pay load); generic handlers share
    one. The handlers are the same objects either way, each wrapped by the
    call interceptor when there is one."""

    def __init__(self, server: grpc.aio.Server, calls: CallInterceptor | None) -> None:
        self._server = server
        self._calls = calls

    def add_generic_rpc_handlers(self, handlers) -> None:
        if self._calls is not None:
            handlers = [self._calls.intercepted(handler) for handler in handlers]
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, handlers) -> None:
        pass  # served by the generic handler added with them


class PortUnavailable(OSError):
    """The address is taken (by another server, unless reuse_port) or not local."""

    def __init__(self, listen: str) -> None:
        self.listen = listen
        super().__init__(f"cannot listen on {listen}")


@dataclass
class RunningServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int

    async def set_serving(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """How long connections live and how dead peers are found. Behind Envoy
    or a Kubernetes Service, a bounded connection age makes clients reconnect
    (and so spread over new replicas); keepalive pings find half-open
    connections that a load balancer dropped silently."""

    # Values (and their defaults) come from ServerConfig.
    max_connection_age_ms: int
    max_connection_age_grace_ms: int
    keepalive_time_ms: int
    keepalive_timeout_ms: int
    min_client_ping_interval_ms: int

    def grpc_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_connection_age_ms", self.max_connection_age_ms),
            ("grpc.max_connection_age_grace_ms", self.max_connection_age_grace_ms),
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
            # Clients (Envoy included) may ping idle connections this often
            # without being told GOAWAY "too_many_pings".
            ("grpc.http2.min_ping_interval_without_data_ms", self.min_client_ping_interval_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_ping_strikes", 2),
        ]


def _check_free(listen: str) -> None:
    """PortUnavailable if `listen` is taken: asked here first because grpc
    only says so in a C-core log line beside its own vague RuntimeError.
    (A race with another process after this check still ends in grpc's.)"""
    host, _, port = listen.rpartition(":")
    if port == "0":
        return
    try:
        addresses = socket.getaddrinfo(host.strip("[]") or None, int(port),
                                       type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, ValueError):
        return  # grpc says what is wrong with it
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc does
            try:
                probe.bind(address)
            except OSError as error:
                raise PortUnavailable(listen) from error


async def start_grpc_server(listen: str, payments: PaymentServicer, batches: BatchServicer,
                            events: EventServicer,
                            interceptors: Sequence[grpc.aio.ServerInterceptor],
                            credentials: grpc.ServerCredentials | None,
                            connections: ConnectionPolicy,
                            reuse_port: bool = False,
                            calls: CallInterceptor | None = None) -> RunningServer:
    """`interceptors` (grpc.aio's: tracing) run in order, the first
    outermost, all of them outside `calls` (call_interceptor.py), which
    wraps every handler itself."""
    if not reuse_port:
        _check_free(listen)
    server = grpc.aio.server(interceptors=list(interceptors), options=[
        # gRPC turns SO_REUSEPORT on by default: two servers would then both
        # listen on one port and a retried Pay could land on the other one.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        *connections.grpc_options(),
    ])
    adding = GenericHandlersOnly(server, calls)
    pb_grpc.add_PaymentServiceServicer_to_server(payments, adding)
    batch_service_pb2_grpc.add_BatchServiceServicer_to_server(batches, adding)
    event_service_pb2_grpc.add_EventServiceServicer_to_server(events, adding)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, adding)
    # Reflection under both names (v1alpha, and v1 for newer clients).
    reflection_v1.register_v1_descriptor()
    reflecting = reflection.aio.ReflectionServicer(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME,
         reflection_v1.SERVICE_NAME))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflecting, adding)
    adding.add_generic_rpc_handlers((reflection_v1.v1_handler(reflecting),))
    try:
        port = (server.add_insecure_port(listen) if credentials is None
                else server.add_secure_port(listen, credentials))
    except RuntimeError as error:  # grpc's only word for "cannot bind"
        raise PortUnavailable(listen) from error
    if not port:
        raise PortUnavailable(listen)
    await server.start()
    running = RunningServer(server, health_servicer, port)
    await running.set_serving(True)
    return running
