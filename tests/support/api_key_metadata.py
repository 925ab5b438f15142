"""Client side of API keys for grpc.aio channels: every call carries
`authorization: Bearer <key>`. Used by paygrid's own tests and benchmark
scripts; applications use the client library in clients/python."""

from __future__ import annotations

import grpc

from paygrid_server.api_keys import DEV_API_KEY


def _with_key(details: grpc.aio.ClientCallDetails, header: tuple[str, str]
              ) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    if "authorization" not in metadata:
        metadata.add(*header)
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata,
                                      details.credentials, details.wait_for_ready)


# One class per call kind: grpc.aio files each interceptor under the first
# kind it is an instance of, so one class for all four would see unary calls only.
class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self.header = header

    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(_with_key(details, self.header), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self.header = header

    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(_with_key(details, self.header), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self.header = header

    async def intercept_stream_unary(self, continuation, details, request_iterator):
        return await continuation(_with_key(details, self.header), request_iterator)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self.header = header

    async def intercept_stream_stream(self, continuation, details, request_iterator):
        return await continuation(_with_key(details, self.header), request_iterator)


def api_key_interceptors(api_key: str) -> list[grpc.aio.ClientInterceptor]:
    header = ("authorization", f"Bearer {api_key}")
    return [kind(header) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]


def keyed_channel(target: str, api_key: str = DEV_API_KEY,
                  credentials: grpc.ChannelCredentials | None = None,
                  options: list[tuple[str, object]] | None = None) -> grpc.aio.Channel:
    interceptors = api_key_interceptors(api_key)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options,
                                   interceptors=interceptors)


# Two tenants' keys, for tests of what one tenant may see of another's.
ACME_KEY = "pgk_acme_test_0123456789abcdef"
GLOBEX_KEY = "pgk_globex_test_fedcba9876543210"


def two_tenants():
    """AuthConfig with the keys of tenants "acme" and "globex"."""
    from paygrid_server.api_keys import ApiKeyEntry, api_key_sha256
    from paygrid_server.config import AuthConfig

    return AuthConfig((ApiKeyEntry("acme", api_key_sha256(ACME_KEY)),
                       ApiKeyEntry("globex", api_key_sha256(GLOBEX_KEY))))
