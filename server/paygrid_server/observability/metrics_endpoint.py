"""The Prometheus scrape endpoint: HTTP GET /metrics on its own port.

prometheus_client's WSGI app on a small threaded HTTP server, so a scrape
never waits for the event loop and never holds it up.
"""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

# How often the serving thread checks for stop: bounds how long stop() waits.
STOP_POLL_INTERVAL_S = 0.05


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
        pass  # one stderr line per scrape would drown the JSON logs


class _MetricsHttpServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress never holds up the process's exit

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host up with socket.getfqdn, a
        # reverse DNS query that can stall start-up; nothing here needs it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class MetricsEndpoint:
    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def port(self) -> int:
        """The bound port: the chosen one when `listen` asked for port 0."""
        return self._httpd.server_address[1]

    @classmethod
    def start(cls, listen: str, registry: CollectorRegistry) -> "MetricsEndpoint":
        host, port = _split_listen(listen)

        class Server(_MetricsHttpServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        httpd = make_server(host, port, make_wsgi_app(registry), Server, _QuietHandler)
        thread = threading.Thread(target=httpd.serve_forever, args=(STOP_POLL_INTERVAL_S,),
                                  name=f"paygrid-metrics-{httpd.server_address[1]}", daemon=True)
        thread.start()
        return cls(httpd, thread)

    async def stop(self) -> None:
        # shutdown() blocks until the serving thread notices: off the loop.
        await asyncio.to_thread(self._httpd.shutdown)
        self._httpd.server_close()
