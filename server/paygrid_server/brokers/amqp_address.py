"""Where the relay's broker is and how to reach it, from its amqp:// or
amqps:// URL, read as aiormq reads one: the vhost is the path (`/` when
empty, %2F decoded), user and password default to guest, TLS options are
query parameters (cafile, capath, certfile, keyfile, no_verify_ssl=1), and
`heartbeat` is the heartbeat asked for in seconds (0: none)."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

# Heartbeat asked for unless the URL says otherwise (aiormq's default too).
HEARTBEAT_S = 60
MAX_HEARTBEAT_S = 65_535  # an AMQP short; 0 turns heartbeats off


def heartbeat_s(query: str) -> int:
    """The heartbeat a URL's query asks for (HEARTBEAT_S when it names
    none). ValueError, saying what is expected, unless it is 0 to
    MAX_HEARTBEAT_S in decimal digits: config_settings.py checks a URL with
    this at start-up, so the relay never meets a heartbeat it cannot use."""
    value = parse_qs(query).get("heartbeat", [str(HEARTBEAT_S)])[-1]
    if re.fullmatch(r"[0-9]+", value) is None or int(value) > MAX_HEARTBEAT_S:
        raise ValueError(f"expected heartbeat=0-{MAX_HEARTBEAT_S} (seconds) in the URL's query, "
                         f"got {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class AmqpAddress:
    host: str
    port: int
    user: str
    password: str
    vhost: str
    heartbeat_s: int
    tls: ssl.SSLContext | None

    @classmethod
    def from_url(cls, url: str) -> "AmqpAddress":
        parts = urlsplit(url)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        tls = None
        if parts.scheme == "amqps":
            tls = ssl.create_default_context(cafile=query.get("cafile"),
                                             capath=query.get("capath"))
            if query.get("certfile"):
                tls.load_cert_chain(query["certfile"], query.get("keyfile"))
            if query.get("no_verify_ssl", "0") != "0":
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        path = parts.path
        return cls(host=parts.hostname or "localhost",
                   port=parts.port or (5671 if tls else 5672),
                   user=unquote(parts.username or "guest"),
                   password=unquote(parts.password or "guest"),
                   vhost="/" if path in ("", "/") else unquote(path[1:]),
                   heartbeat_s=heartbeat_s(parts.query),
                   tls=tls)
