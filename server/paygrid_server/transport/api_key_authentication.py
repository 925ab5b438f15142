"""Every paygrid.v1 call is made by a tenant, known by its API key.

The key comes as `authorization: Bearer <key>` (or `x-api-key: <key>`).
Health checks and reflection stay open: probes and grpcurl's `list` carry
no key. The tenant is handed to the servicer through a context variable set
for the call's own task.
"""

from __future__ import annotations

import contextvars
from contextlib import asynccontextmanager
from typing import AsyncIterator, Sequence

import grpc

from paygrid_server.api_keys import ApiKeyRegistry
from paygrid_server.transport.handler_wrapping import wrap_handler
from paygrid_server.transport.status_errors import abort_unauthenticated

PROTECTED_METHOD_PREFIXES = ("/paygrid.v1.",)

_caller_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("paygrid_caller_tenant")


def caller_tenant() -> str:
    """The tenant of the call being served; set by ApiKeyAuthentication."""
    return _caller_tenant.get()


def presented_key(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for name, value in metadata or ():
        if isinstance(value, bytes):
            continue
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == "x-api-key" and value.strip():
            return value.strip()
    return None


class ApiKeyAuthentication(grpc.aio.ServerInterceptor):
    def __init__(self, registry: ApiKeyRegistry) -> None:
        self._registry = registry

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or not details.method.startswith(PROTECTED_METHOD_PREFIXES):
            return handler
        key = presented_key(details.invocation_metadata)
        tenant = self._registry.tenant_for(key) if key else None

        @asynccontextmanager
        async def as_tenant(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            if key is None:
                await abort_unauthenticated(
                    context, "MISSING_API_KEY",
                    "send your API key as metadata 'authorization: Bearer <key>'")
            if tenant is None:
                await abort_unauthenticated(context, "INVALID_API_KEY",
                                            "the API key is not known to this server")
            # Each call runs in its own task, so the value cannot leak into
            # another call; it is not reset because a streaming handler may
            # be finalised in another context.
            _caller_tenant.set(tenant)
            yield

        return wrap_handler(handler, as_tenant)
