"""Server reflection under its v1 name, beside v1alpha.

grpcio-reflection serves only grpc.reflection.v1alpha; clients written for
grpc.reflection.v1 (newer grpcurl, grpc-java, reflection libraries) then get
UNIMPLEMENTED. v1 is the same protocol under a new package name: the same
messages, field for field, so the same bytes. So the v1alpha servicer
answers under the v1 method name too, and the v1 file descriptor (derived
from the v1alpha one: only the names differ) is added to the pool so that
reflection can describe the v1 service itself. Once grpcio-reflection ships
v1 itself, this module goes (register_v1_descriptor already defers to a v1
file present in the pool).
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha

V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
V1_PACKAGE = "grpc.reflection.v1"
V1_FILE = "grpc/reflection/v1/reflection.proto"
SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
METHOD = "ServerReflectionInfo"


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """The v1alpha file, renamed: package, file name and every type
    reference; its language options (v1alpha's Go/Java packages) dropped."""
    file = descriptor_pb2.FileDescriptorProto()
    v1alpha.DESCRIPTOR.CopyToProto(file)
    file.name = V1_FILE
    file.package = V1_PACKAGE
    file.ClearField("options")
    old, new = f".{V1ALPHA_PACKAGE}.", f".{V1_PACKAGE}."
    for message in file.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old):]
    for service in file.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old):]
            method.output_type = new + method.output_type[len(old):]
    return file


def register_v1_descriptor(pool: descriptor_pool.DescriptorPool | None = None) -> None:
    """Adds the v1 reflection file to the pool reflection answers from (once)."""
    pool = pool or descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.Add(_v1_file())


def v1_handler(servicer) -> grpc.GenericRpcHandler:
    """The v1 method, served by a v1alpha servicer: the messages are
    wire-identical, so v1alpha's classes parse and write v1's bytes."""
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha.ServerReflectionRequest.FromString,
        response_serializer=v1alpha.ServerReflectionResponse.SerializeToString)
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {METHOD: method})
