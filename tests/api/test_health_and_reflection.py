"""Standard grpc.health.v1 and server reflection, so probes and grpcurl work."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from tests.conftest import leg, pay_request


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


V1_REFLECTION = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def _v1_reflection(channel):
    """A grpc.reflection.v1 call. Its messages are v1alpha's, field for
    field, so v1alpha's classes write exactly the bytes a v1 client sends."""
    return channel.stream_stream(
        V1_REFLECTION,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)


async def test_reflection_answers_under_its_v1_name(paygrid) -> None:
    ask_v1 = _v1_reflection(paygrid.channel)
    responses = [r async for r in ask_v1(iter([
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="grpc.reflection.v1.ServerReflection"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="paygrid.v1.BatchService"),
    ]))]
    listed, v1_file, batch_file = responses
    names = {s.name for s in listed.list_services_response.service}
    assert {"paygrid.v1.PaymentService", "paygrid.v1.BatchService",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= names
    described = descriptor_pb2.FileDescriptorProto.FromString(
        v1_file.file_descriptor_response.file_descriptor_proto[0])
    assert described.package == "grpc.reflection.v1"
    assert described.service[0].method[0].input_type == (
        ".grpc.reflection.v1.ServerReflectionRequest")
    assert batch_file.file_descriptor_response.file_descriptor_proto


async def _closure(ask, symbol: str) -> list[descriptor_pb2.FileDescriptorProto]:
    """What a reflection client that knows only a service's name loads: the
    file containing the service, then every dependency, file by file."""
    found: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    async def load(response) -> None:
        for raw in response.file_descriptor_response.file_descriptor_proto:
            file = descriptor_pb2.FileDescriptorProto.FromString(raw)
            found.setdefault(file.name, file)

    await load(await ask(file_containing_symbol=symbol))
    while missing := {d for f in found.values() for d in f.dependency} - set(found):
        for name in sorted(missing):
            await load(await ask(file_by_filename=name))
    return list(found.values())


async def test_a_fresh_reflection_client_decodes_bad_request_without_naming_it(paygrid) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(paygrid.channel)

    async def ask(**request):
        async for response in stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(**request)])):
            return response

    pool = descriptor_pool.DescriptorPool()  # knows nothing, not even google.rpc
    files = {f.name: f for f in await _closure(ask, "paygrid.v1.PaymentService")}
    added: set[str] = set()

    def add(name: str) -> None:  # dependencies first, as the pool requires
        if name not in added:
            added.add(name)
            for dependency in files[name].dependency:
                add(dependency)
            pool.Add(files[name])

    for name in files:
        add(name)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await paygrid.stub.Pay(pay_request("k-reflect", leg(currency="EURO")))
    status = rpc_status.from_call(refused.value)
    packed = next(d for d in status.details if d.type_url.endswith("/google.rpc.BadRequest"))
    message_type = pool.FindMessageTypeByName(packed.type_url.rsplit("/", 1)[1])
    bad_request = message_factory.GetMessageClass(message_type).FromString(packed.value)
    assert [v.field for v in bad_request.field_violations] == ["legs[0].amount.currency"]
