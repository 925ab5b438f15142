"""Each scalar setting: its name in each source (`[tls] cert_file` =
`PAYGRID_TLS_CERT_FILE` = `--tls-cert-file`), the check its value passes,
and how a raw value (TOML, environment text, flag) becomes the config's.
config.py reads the sources in order and uses these."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from paygrid_server.brokers.amqp_address import heartbeat_s as amqp_heartbeat_s
from paygrid_server.config_model import POSTGRES_SCHEMES, SQLITE_SCHEME, ConfigError, ServerConfig
from paygrid_server.domain.model import limits
from paygrid_server.storage.postgres.database import redacted_dsn

redacted_url = redacted_dsn  # any URL's password, not only a DSN's


def _positive(value: int) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value}"


def _not_negative(value: int) -> str | None:
    return None if value >= 0 else f"must be 0 or more, got {value}"


def _batch_yield_ms(value: int) -> str | None:
    most = limits.BATCH_YIELD_TO_PAYMENTS_MAX_MS
    return None if 0 <= value <= most else f"must be 0 to {most}, got {value}"


def _host_port(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65_535:
        return f"expected host:port, got {value!r}"
    return None


def _host_port_or_off(value: str) -> str | None:
    return None if value == "" else _host_port(value)


def _amqp_url_or_off(value: str) -> str | None:
    if value == "":
        return None
    parts = urlsplit(value)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname or not port_ok:
        return (f"expected amqp://[user:password@]host[:port][/vhost] (or amqps://), "
                f"got {redacted_url(value)!r}")
    try:
        amqp_heartbeat_s(parts.query)
    except ValueError as error:
        return str(error)
    return None


def _exchange_name(value: str) -> str | None:
    # AMQP 0-9-1: up to 255 of letters, digits, '-', '_', '.', ':'; "" is the default exchange.
    if re.fullmatch(r"[A-Za-z0-9_.:-]{1,255}", value) is None or value.startswith("amq."):
        return f"expected 1-255 of A-Z, a-z, 0-9, '-', '_', '.', ':' (not amq.*), got {value!r}"
    return None


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"expected one of {', '.join(choices)}, got {value!r}"
    return check


@dataclass(frozen=True, slots=True)
class Setting:
    section: str  # TOML table
    key: str  # TOML key
    kind: type  # str, int, bool or Path
    path: tuple[str, ...]  # attribute path in ServerConfig
    env: str
    check: Callable[[Any], str | None] | None = None

    @property
    def empty_turns_off(self) -> bool:
        """Whether "" is a value of its own here (it turns the feature off,
        as the metrics port and the relay's URL): an environment variable
        set to "" then means it. For the others "" is no value, and the
        variable counts as not set."""
        return self.kind is str and self.check is not None and self.check("") is None

    @property
    def flag(self) -> str:
        return "--" + self.env.removeprefix("PAYGRID_").lower().replace("_", "-")

    @property
    def dest(self) -> str:
        return self.env.removeprefix("PAYGRID_").lower()


def _server(key: str, kind: type, env: str, attr: str | None = None,
            check: Callable[[Any], str | None] | None = _positive) -> Setting:
    return Setting("server", key, kind, (attr or key,), env, check)


class DatabaseLocation:
    """The kind of `[server] database`: a SQLite path or a PostgreSQL DSN."""


def _database(config: ServerConfig, value: Path | str) -> ServerConfig:
    if isinstance(value, str) and value.startswith(POSTGRES_SCHEMES):
        return replace(config, postgres_dsn=value)
    return replace(config, database_path=Path(value), postgres_dsn=None)


def _parse_database(value: Any) -> Path | str | None:
    """A DSN (kept as text), a sqlite:///path or a path (as a Path); None if neither."""
    if not isinstance(value, (str, Path)) or not str(value):
        return None
    text = str(value)
    if text.startswith(POSTGRES_SCHEMES):
        return text  # asyncpg reads the rest (libpq's URI form) when it connects
    if text.startswith(SQLITE_SCHEME):
        # As SQLAlchemy writes them: sqlite:///relative/path, sqlite:////absolute/path.
        text = text.removeprefix(SQLITE_SCHEME)
        return Path(text) if text else None
    if "://" in text:
        return None
    return Path(text)


SETTINGS = (
    _server("listen", str, "PAYGRID_LISTEN", check=_host_port),
    _server("reuse_port", bool, "PAYGRID_REUSE_PORT", check=None),
    _server("database", DatabaseLocation, "PAYGRID_DATABASE", "database_path", check=None),
    _server("breaker_failure_threshold", int, "PAYGRID_BREAKER_FAILURE_THRESHOLD"),
    _server("breaker_open_ms", int, "PAYGRID_BREAKER_OPEN_MS"),
    _server("recovery_interval_ms", int, "PAYGRID_RECOVERY_INTERVAL_MS"),
    _server("shutdown_grace_ms", int, "PAYGRID_SHUTDOWN_GRACE_MS"),
    _server("shutdown_drain_delay_ms", int, "PAYGRID_SHUTDOWN_DRAIN_DELAY_MS", check=_not_negative),
    _server("max_concurrent_calls", int, "PAYGRID_MAX_CONCURRENT_CALLS"),
    _server("max_concurrent_batch_streams", int, "PAYGRID_MAX_CONCURRENT_BATCH_STREAMS"),
    _server("max_accepted_payments", int, "PAYGRID_MAX_ACCEPTED_PAYMENTS"),
    _server("batch_group_workers", int, "PAYGRID_BATCH_GROUP_WORKERS", check=_positive),
    _server("batch_lease_ms", int, "PAYGRID_BATCH_LEASE_MS", check=_positive),
    _server("batch_lease_renew_every_ms", int, "PAYGRID_BATCH_LEASE_RENEW_EVERY_MS",
            check=_positive),
    _server("batch_claim_poll_ms", int, "PAYGRID_BATCH_CLAIM_POLL_MS", check=_positive),
    _server("batch_progress_poll_ms", int, "PAYGRID_BATCH_PROGRESS_POLL_MS", check=_positive),
    _server("batch_yield_to_payments_ms", int, "PAYGRID_BATCH_YIELD_TO_PAYMENTS_MS",
            check=_batch_yield_ms),
    _server("max_connection_age_ms", int, "PAYGRID_MAX_CONNECTION_AGE_MS"),
    _server("max_connection_age_grace_ms", int, "PAYGRID_MAX_CONNECTION_AGE_GRACE_MS"),
    _server("keepalive_time_ms", int, "PAYGRID_KEEPALIVE_TIME_MS"),
    _server("keepalive_timeout_ms", int, "PAYGRID_KEEPALIVE_TIMEOUT_MS"),
    _server("keepalive_min_client_ping_interval_ms", int,
            "PAYGRID_KEEPALIVE_MIN_CLIENT_PING_INTERVAL_MS"),
    Setting("tls", "cert_file", Path, ("tls", "cert_file"), "PAYGRID_TLS_CERT_FILE"),
    Setting("tls", "key_file", Path, ("tls", "key_file"), "PAYGRID_TLS_KEY_FILE"),
    Setting("tls", "client_ca_file", Path, ("tls", "client_ca_file"),
            "PAYGRID_TLS_CLIENT_CA_FILE"),
    Setting("observability", "metrics_listen", str, ("observability", "metrics_listen"),
            "PAYGRID_METRICS_LISTEN", _host_port_or_off),
    Setting("observability", "tracing_exporter", str, ("observability", "tracing_exporter"),
            "PAYGRID_TRACING_EXPORTER", _one_of("none", "console", "otlp")),
    Setting("observability", "otlp_endpoint", str, ("observability", "otlp_endpoint"),
            "PAYGRID_OTLP_ENDPOINT", _host_port),
    Setting("postgres", "pool_max_connections", int, ("postgres", "pool_max_connections"),
            "PAYGRID_POSTGRES_POOL_MAX_CONNECTIONS", _positive),
    Setting("postgres", "statement_timeout_ms", int, ("postgres", "statement_timeout_ms"),
            "PAYGRID_POSTGRES_STATEMENT_TIMEOUT_MS", _positive),
    Setting("postgres", "connect_timeout_ms", int, ("postgres", "connect_timeout_ms"),
            "PAYGRID_POSTGRES_CONNECT_TIMEOUT_MS", _positive),
    Setting("events", "retention_days", int, ("events", "retention_days"),
            "PAYGRID_EVENTS_RETENTION_DAYS", _not_negative),
    Setting("events", "prune_interval_ms", int, ("events", "prune_interval_ms"),
            "PAYGRID_EVENTS_PRUNE_INTERVAL_MS", _positive),
    Setting("events", "prune_chunk_rows", int, ("events", "prune_chunk_rows"),
            "PAYGRID_EVENTS_PRUNE_CHUNK_ROWS", _positive),
    Setting("events", "max_watchers", int, ("events", "max_watchers"),
            "PAYGRID_EVENTS_MAX_WATCHERS", _positive),
    Setting("events.rabbitmq", "url", str, ("events_rabbitmq", "url"),
            "PAYGRID_EVENTS_RABBITMQ_URL", _amqp_url_or_off),
    Setting("events.rabbitmq", "exchange", str, ("events_rabbitmq", "exchange"),
            "PAYGRID_EVENTS_RABBITMQ_EXCHANGE", _exchange_name),
)


def coerce(setting: Setting, value: Any, where: str) -> Any:
    kind = setting.kind
    if kind is DatabaseLocation:
        parsed = _parse_database(value)
        if parsed is None:
            raise ConfigError(f"{where}: expected a SQLite file path, sqlite:///path or "
                              f"postgresql://[user[:password]@]host[:port]/database, "
                              f"got {redacted_dsn(str(value))!r}")
        return parsed
    if isinstance(value, str) and kind is bool:  # from the environment or a flag
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if value.lower() not in words:
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        value = words[value.lower()]
    if isinstance(value, str) and kind is int:
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if kind is Path:
        if not isinstance(value, (str, Path)) or not str(value):
            raise ConfigError(f"{where}: expected a file path, got {value!r}")
        value = Path(value)
    elif not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    if setting.check is not None and (problem := setting.check(value)):
        raise ConfigError(f"{where}: {problem}")
    return value


def set_setting(config: ServerConfig, path: tuple[str, ...], value: Any) -> ServerConfig:
    if path == ("database_path",):
        return _database(config, value)  # a later source may switch the engine either way
    if len(path) == 1:
        return replace(config, **{path[0]: value})
    inner = getattr(config, path[0])
    return replace(config, **{path[0]: replace(inner, **{path[1]: value})})
