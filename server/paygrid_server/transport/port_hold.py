"""The gRPC port held by the supervisor of `serve --workers N` for its life.

Its workers listen with SO_REUSEPORT, and the kernel lets any process of
the same user join such a port: a second supervisor, or a stray server
with reuse_port on, would silently share it. So the supervisor first binds
the address exclusively (taken: refused with the one-line port failure, as
a lone server is), then keeps a socket bound there with SO_REUSEPORT and
never listening: it takes no connections (the kernel spreads them over
listening sockets only), yet a server without reuse_port cannot bind the
port, and a second supervisor's exclusive bind fails. Port 0 is chosen
here once, so every worker gets the same port.
"""

from __future__ import annotations

import socket

from paygrid_server import startup_failure


class PortHold:
    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1]

    @classmethod
    def take(cls, listen: str) -> "PortHold":
        host, _, port = listen.rpartition(":")
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host.strip("[]") or None, int(port), type=socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE)[0]
        except (OSError, ValueError):
            raise startup_failure.port_in_use(listen, reuse_port=True) from None
        with socket.socket(family, kind, proto) as exclusive:
            exclusive.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc does
            try:
                exclusive.bind(address)
            except OSError:
                raise startup_failure.port_in_use(listen, reuse_port=True) from None
            address = (address[0], exclusive.getsockname()[1], *address[2:])
        held = socket.socket(family, kind, proto)
        try:
            # SO_REUSEPORT alone: a bind with SO_REUSEADDR only (a lone
            # server's, a second supervisor's) conflicts with it even while
            # nothing listens; the workers' binds set SO_REUSEPORT too.
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            held.bind(address)  # the port just freed: another process may have taken it
        except OSError:
            held.close()
            raise startup_failure.port_in_use(listen, reuse_port=True) from None
        return cls(held)

    def __enter__(self) -> "PortHold":
        return self

    def __exit__(self, *exc_info) -> None:
        self._socket.close()
