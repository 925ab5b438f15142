"""How a client reaches paygrid: the target, plaintext or TLS (optionally
mutual), and the API key every paygrid.v1 call carries as
`authorization: Bearer <key>` metadata."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import grpc

DEFAULT_TARGET = "127.0.0.1:50051"
TARGET_ENV = "PAYGRID_TARGET"
API_KEY_ENV = "PAYGRID_API_KEY"
# Accepted by a server with no API keys configured (development only).
DEV_API_KEY = "paygrid-dev-key"

# gRPC's reconnect backoff grows to 120 s by default; a client that retries
# for seconds needs its channel to try connecting again within that time.
RECONNECT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)

PathLike = str | os.PathLike[str]


def resolve_api_key(api_key: str | None) -> str:
    """The key given, else $PAYGRID_API_KEY, else the development key."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "").strip()
    key = key or DEV_API_KEY
    if not key.isascii() or not key.isprintable() or " " in key:
        raise ValueError("the API key must be printable ASCII without spaces")
    return key


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    target: str
    api_key: str
    tls_ca_pem: bytes | None = None
    tls_cert_pem: bytes | None = None
    tls_key_pem: bytes | None = None
    tls_server_name: str | None = None
    channel_options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def create(cls, target: str = DEFAULT_TARGET, *, api_key: str | None = None,
               tls_ca: PathLike | None = None, tls_cert: PathLike | None = None,
               tls_key: PathLike | None = None, tls_server_name: str | None = None,
               channel_options: Sequence[tuple[str, Any]] = ()) -> "ConnectionSettings":
        """Reads the PEM files now, so a wrong path fails here, not at the first call."""
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("mutual TLS needs both tls_cert and tls_key")
        if not target:
            raise ValueError("target is required, e.g. 127.0.0.1:50051")
        return cls(target=target, api_key=resolve_api_key(api_key),
                   tls_ca_pem=_read(tls_ca), tls_cert_pem=_read(tls_cert),
                   tls_key_pem=_read(tls_key), tls_server_name=tls_server_name or None,
                   channel_options=tuple(channel_options))

    @property
    def uses_tls(self) -> bool:
        # A server name alone means TLS with the system's trusted roots.
        return (self.tls_ca_pem is not None or self.tls_cert_pem is not None
                or self.tls_server_name is not None)

    @property
    def auth_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)

    def options(self) -> list[tuple[str, Any]]:
        options = dict(RECONNECT_OPTIONS)
        if self.tls_server_name:
            options["grpc.ssl_target_name_override"] = self.tls_server_name
        options.update(self.channel_options)
        return list(options.items())

    def credentials(self) -> grpc.ChannelCredentials:
        # No CA given with a client certificate: the system's trusted roots.
        return grpc.ssl_channel_credentials(root_certificates=self.tls_ca_pem,
                                            private_key=self.tls_key_pem,
                                            certificate_chain=self.tls_cert_pem)

    def open_channel(self) -> grpc.Channel:
        if self.uses_tls:
            return grpc.secure_channel(self.target, self.credentials(), options=self.options())
        return grpc.insecure_channel(self.target, options=self.options())

    def open_aio_channel(self) -> grpc.aio.Channel:
        if self.uses_tls:
            return grpc.aio.secure_channel(self.target, self.credentials(),
                                           options=self.options())
        return grpc.aio.insecure_channel(self.target, options=self.options())


def _read(path: PathLike | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()
