"""Every paygrid.v1 call is made by a tenant, known by its API key.

The key comes as `authorization: Bearer <key>` (or `x-api-key: <key>`).
Health checks and reflection stay open: probes and grpcurl's `list` carry
no key. The tenant is handed to the servicer through a context variable set
for the call's own task.
"""

from __future__ import annotations

import contextvars
from typing import Sequence

import grpc

from paygrid_server.api_keys import ApiKeyRegistry
from paygrid_server.transport.status_errors import abort_unauthenticated

PROTECTED_METHOD_PREFIXES = ("/paygrid.v1.",)

_caller_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("paygrid_caller_tenant")


def caller_tenant() -> str:
    """The tenant of the call being served; set by authenticate()."""
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


def is_protected(method: str) -> bool:
    return method.startswith(PROTECTED_METHOD_PREFIXES)


async def authenticate(context: grpc.aio.ServicerContext, registry: ApiKeyRegistry,
                       metadata: Sequence[tuple[str, str | bytes]] | None) -> None:
    """Makes the key's tenant the call's, or ends the call UNAUTHENTICATED.
    `metadata`: the call's invocation metadata, as its caller read it."""
    key = presented_key(metadata)
    if key is None:
        await abort_unauthenticated(
            context, "MISSING_API_KEY",
            "send your API key as metadata 'authorization: Bearer <key>'")
    tenant = registry.tenant_for(key)
    if tenant is None:
        await abort_unauthenticated(context, "INVALID_API_KEY",
                                    "the API key is not known to this server")
    # Each call runs in its own task, so the value cannot leak into another
    # call; it is not reset because a streaming handler may be finalised in
    # another context.
    _caller_tenant.set(tenant)
