"""gRPC TLS credentials from PEM files, for our server and for channel stubs.

A missing or unreadable file is a configuration error at start-up
(TlsFileUnreadable, reported as one), not a failed handshake later.
"""

from __future__ import annotations

from pathlib import Path

import grpc



class TlsFileUnreadable(ValueError):
    """A certificate, key or CA file named in the configuration cannot be read."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsFileUnreadable(f"{what}: cannot read {str(path)!r}: {error.strerror}") from error


def server_credentials(cert_file: Path, key_file: Path,
                       client_ca_file: Path | None) -> grpc.ServerCredentials:
    """TLS; with a client CA, mTLS: a client without a certificate it signed
    cannot even complete the handshake."""
    pair = (_read(key_file, "tls.key_file"), _read(cert_file, "tls.cert_file"))
    if client_ca_file is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=_read(client_ca_file, "tls.client_ca_file"),
        require_client_auth=True)


def channel_credentials(ca_file: Path, cert_file: Path | None, key_file: Path | None,
                        where: str) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, f"{where}.tls_ca_file"),
        private_key=_read(key_file, f"{where}.tls_key_file") if key_file else None,
        certificate_chain=_read(cert_file, f"{where}.tls_cert_file") if cert_file else None)
