"""Standard grpc.health.v1 and server reflection, so probes and grpcurl work."""

from __future__ import annotations

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


async def test_health_is_serving_overall_and_per_service(paygrid) -> None:
    stub = health_pb2_grpc.HealthStub(paygrid.channel)
    for service in ("", "paygrid.v1.PaymentService", "paygrid.v1.BatchService"):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_describes_the_api_without_protos(paygrid) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(paygrid.channel)

    async def ask(**request):
        async for response in stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(**request)])):
            return response

    listed = await ask(list_services="")
    names = {s.name for s in listed.list_services_response.service}
    assert {"paygrid.v1.PaymentService", "paygrid.v1.BatchService",
            "grpc.health.v1.Health"} <= names
    described = await ask(file_containing_symbol="paygrid.v1.PaymentService")
    assert described.file_descriptor_response.file_descriptor_proto
