"""The gRPC server: paygrid services, standard health checking and reflection."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from paygrid.v1 import batch_service_pb2, batch_service_pb2_grpc
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from paygrid_server.transport.batch_servicer import BatchServicer
from paygrid_server.transport.payment_servicer import PaymentServicer

# Explicit wire limit: a Pay of 16 legs with full metadata is a few KiB.
MAX_MESSAGE_BYTES = 1 * 1024 * 1024

SERVICE_NAMES = (pb.DESCRIPTOR.services_by_name["PaymentService"].full_name,
                 batch_service_pb2.DESCRIPTOR.services_by_name["BatchService"].full_name)


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


async def start_grpc_server(listen: str, payments: PaymentServicer,
                            batches: BatchServicer) -> RunningServer:
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ])
    pb_grpc.add_PaymentServiceServicer_to_server(payments, server)
    batch_service_pb2_grpc.add_BatchServiceServicer_to_server(batches, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(listen)
    if not port:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    running = RunningServer(server, health_servicer, port)
    await running.set_serving(True)
    return running
