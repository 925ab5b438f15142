"""Server configuration: defaults, then a TOML file, then environment, then flags.

Every scalar setting has one name in each source, listed once in SETTINGS
(`[tls] cert_file` = `PAYGRID_TLS_CERT_FILE` = `--tls-cert-file`). Every value
is checked when loaded; a bad one stops start-up with a message naming the
key and where it came from.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from paygrid_server.api_keys import SHA256_HEX_PATTERN, TENANT_ID_PATTERN, ApiKeyEntry
from paygrid_server.domain import limits
from paygrid_server.domain.currencies import MINOR_UNITS
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour
from paygrid_server.storage.postgres_database import redacted_dsn


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    name: str
    # host:port of a paygrid.channel.v1 service; None runs a simulator in-process.
    target: str | None = None
    currencies: frozenset[str] = frozenset()  # empty: every currency
    min_amount_minor: int = 1
    max_amount_minor: int = limits.MAX_AMOUNT_MINOR
    priority: int = 100
    timeout_ms: int = 2_000
    simulator: SimulatorBehaviour = SimulatorBehaviour()
    # The simulator called directly instead of over loopback gRPC: measures
    # paygrid's own cost without a second transport in the same process.
    simulator_in_process: bool = False
    # TLS to a remote channel: the CA to trust turns it on; a client
    # certificate and key add mTLS.
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_server_name: str | None = None  # when the certificate names another host


DEFAULT_CHANNELS = (
    ChannelConfig("card", priority=10, simulator=SimulatorBehaviour(latency_ms=20, jitter_ms=10)),
    ChannelConfig("wallet", currencies=frozenset({"USD", "EUR", "GBP"}),
                  max_amount_minor=1_000_000, priority=20,
                  simulator=SimulatorBehaviour(latency_ms=10, jitter_ms=5)),
    ChannelConfig("bank_transfer", currencies=frozenset({"EUR", "GBP", "USD", "CHF"}),
                  priority=30, simulator=SimulatorBehaviour(latency_ms=50, jitter_ms=20)),
)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_file: Path | None = None  # server certificate chain (PEM); with key_file turns TLS on
    key_file: Path | None = None
    client_ca_file: Path | None = None  # when set, clients must present a certificate it signed


@dataclass(frozen=True, slots=True)
class AuthConfig:
    # SHA-256 digests of API keys and their tenants; none: only the dev key works.
    api_keys: tuple[ApiKeyEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class ObservabilityConfig:
    # host:port of the Prometheus /metrics HTTP endpoint; "" turns it off.
    metrics_listen: str = "127.0.0.1:9464"
    # Where finished spans go: "none", "console" (stderr) or "otlp" (gRPC).
    tracing_exporter: str = "none"
    # host:port of an OpenTelemetry collector, for tracing_exporter = "otlp".
    otlp_endpoint: str = "127.0.0.1:4317"


@dataclass(frozen=True, slots=True)
class PostgresConfig:
    """Limits of one replica's connection pool (only with a postgresql:// database)."""
    pool_max_connections: int = 10  # replicas x this must stay under the server's max_connections
    statement_timeout_ms: int = 30_000  # the server cancels a statement running longer
    connect_timeout_ms: int = 5_000  # to open one connection (TCP, TLS, authentication)


POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite:///"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    # SO_REUSEPORT on the gRPC port: several processes may then listen on it
    # and the kernel splits connections between them. Off, a second server
    # on a taken port refuses to start instead of silently sharing it.
    reuse_port: bool = False
    # `[server] database` sets one of these two: a path (or sqlite:///path)
    # is a SQLite file; a postgresql:// DSN selects PostgreSQL, and then
    # database_path is not used.
    database_path: Path = Path("var/paygrid.sqlite3")
    postgres_dsn: str | None = None
    channels: tuple[ChannelConfig, ...] = field(default=DEFAULT_CHANNELS)
    breaker_failure_threshold: int = 5
    breaker_open_ms: int = 5_000
    recovery_interval_ms: int = 5_000
    shutdown_grace_ms: int = 10_000
    # After SIGTERM, health says NOT_SERVING but calls are still taken for
    # this long, so load balancers stop routing here before the port closes.
    shutdown_drain_delay_ms: int = 0
    # Load shedding: calls past these get RESOURCE_EXHAUSTED at once.
    max_concurrent_calls: int = 512
    max_concurrent_batch_streams: int = 16
    # Batch groups are work units any replica claims (leases in the database):
    batch_group_workers: int = 32  # groups this replica charges at once, all batches together
    batch_lease_ms: int = 15_000  # a group or a batch stream not renewed this long is taken over
    batch_lease_renew_every_ms: int = 5_000  # held leases are renewed this often (< lease / 2)
    batch_claim_poll_ms: int = 100  # an idle replica looks for groups to claim this often
    batch_progress_poll_ms: int = 100  # a stream looks for groups done by other replicas
    # Connections are closed after this age (with a grace for calls in
    # flight), so clients re-resolve and load spreads over new replicas.
    max_connection_age_ms: int = 300_000
    max_connection_age_grace_ms: int = 30_000
    keepalive_time_ms: int = 60_000  # server pings an idle connection this often
    keepalive_timeout_ms: int = 20_000  # and drops it when a ping is not answered in time
    keepalive_min_client_ping_interval_ms: int = 10_000  # clients may ping this often
    tls: TlsConfig = TlsConfig()
    auth: AuthConfig = AuthConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    postgres: PostgresConfig = PostgresConfig()

    @property
    def database_engine(self) -> str:
        return "postgresql" if self.postgres_dsn else "sqlite"

    @property
    def database_shown(self) -> str:
        """Where the data is, fit for logs: the DSN without its password."""
        return redacted_dsn(self.postgres_dsn) if self.postgres_dsn else str(self.database_path)


def _positive(value: int) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value}"


def _not_negative(value: int) -> str | None:
    return None if value >= 0 else f"must be 0 or more, got {value}"


def _host_port(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65_535:
        return f"expected host:port, got {value!r}"
    return None


def _host_port_or_off(value: str) -> str | None:
    return None if value == "" else _host_port(value)


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
    _server("batch_group_workers", int, "PAYGRID_BATCH_GROUP_WORKERS", check=_positive),
    _server("batch_lease_ms", int, "PAYGRID_BATCH_LEASE_MS", check=_positive),
    _server("batch_lease_renew_every_ms", int, "PAYGRID_BATCH_LEASE_RENEW_EVERY_MS",
            check=_positive),
    _server("batch_claim_poll_ms", int, "PAYGRID_BATCH_CLAIM_POLL_MS", check=_positive),
    _server("batch_progress_poll_ms", int, "PAYGRID_BATCH_PROGRESS_POLL_MS", check=_positive),
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
)

# Not scalars: API keys are a list ([auth] api_keys, or PAYGRID_API_KEYS as
# "tenant:sha256,tenant:sha256"); channels are [[channels]] tables.
API_KEYS_ENV = "PAYGRID_API_KEYS"


def _coerce(setting: Setting, value: Any, where: str) -> Any:
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


def _set(config: ServerConfig, path: tuple[str, ...], value: Any) -> ServerConfig:
    if path == ("database_path",):
        return _database(config, value)  # a later source may switch the engine either way
    if len(path) == 1:
        return replace(config, **{path[0]: value})
    inner = getattr(config, path[0])
    return replace(config, **{path[0]: replace(inner, **{path[1]: value})})


def _take(table: dict[str, Any], key: str, kind: type, where: str, default: Any) -> Any:
    if key not in table:
        return default
    value = table.pop(key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def _positive_int(table: dict[str, Any], key: str, where: str, default: int) -> int:
    value = _take(table, key, int, where, default)
    if problem := _positive(value):
        raise ConfigError(f"{where}.{key}: {problem}")
    return value


def _optional_path(table: dict[str, Any], key: str, where: str) -> Path | None:
    value = _take(table, key, str, where, None)
    return Path(value) if value else None


def _channel(table: dict[str, Any], where: str) -> ChannelConfig:
    table = dict(table)
    name = _take(table, "name", str, where, "")
    if not name or len(name) > limits.CHANNEL_NAME_MAX_CHARS:
        raise ConfigError(f"{where}.name: required, 1-{limits.CHANNEL_NAME_MAX_CHARS} characters")
    currencies = frozenset(_take(table, "currencies", list, where, []))
    unknown = sorted(c for c in currencies if c not in MINOR_UNITS)
    if unknown:
        raise ConfigError(f"{where}.currencies: not ISO 4217 codes: {', '.join(map(str, unknown))}")
    sim_table = dict(_take(table, "simulator", dict, where, {}))
    sim_where = f"{where}.simulator"
    simulator = SimulatorBehaviour(
        latency_ms=_take(sim_table, "latency_ms", float, sim_where, 0.0),
        jitter_ms=_take(sim_table, "jitter_ms", float, sim_where, 0.0),
        failure_rate=_take(sim_table, "failure_rate", float, sim_where, 0.0),
        seed=_take(sim_table, "seed", int, sim_where, None),
    )
    config = ChannelConfig(
        name=name,
        target=_take(table, "target", str, where, None),
        currencies=currencies,
        min_amount_minor=_positive_int(table, "min_amount_minor", where, 1),
        max_amount_minor=_positive_int(table, "max_amount_minor", where, limits.MAX_AMOUNT_MINOR),
        priority=_take(table, "priority", int, where, 100),
        timeout_ms=_positive_int(table, "timeout_ms", where, 2_000),
        simulator=simulator,
        simulator_in_process=_take(sim_table, "in_process", bool, sim_where, False),
        tls_ca_file=_optional_path(table, "tls_ca_file", where),
        tls_cert_file=_optional_path(table, "tls_cert_file", where),
        tls_key_file=_optional_path(table, "tls_key_file", where),
        tls_server_name=_take(table, "tls_server_name", str, where, None),
    )
    leftovers = sorted(table) + [f"simulator.{k}" for k in sorted(sim_table)]
    if leftovers:
        raise ConfigError(f"{where}: unknown keys {', '.join(leftovers)}")
    if config.min_amount_minor > config.max_amount_minor:
        raise ConfigError(f"{where}: min_amount_minor is above max_amount_minor")
    if (config.tls_cert_file is None) != (config.tls_key_file is None):
        raise ConfigError(f"{where}: tls_cert_file and tls_key_file go together")
    if config.tls_cert_file is not None and config.tls_ca_file is None:
        raise ConfigError(f"{where}: a client certificate needs tls_ca_file (TLS) as well")
    if config.target is None and config.tls_ca_file is not None:
        raise ConfigError(f"{where}: TLS settings need a remote target")
    return config


def _api_key(tenant: Any, digest: Any, where: str) -> ApiKeyEntry:
    if not isinstance(tenant, str) or not TENANT_ID_PATTERN.fullmatch(tenant):
        raise ConfigError(f"{where}: tenant must be 1-64 of a-z, 0-9, '_' or '-' "
                          f"(starting with a letter or digit), got {tenant!r}")
    if not isinstance(digest, str) or not SHA256_HEX_PATTERN.fullmatch(digest):
        raise ConfigError(f"{where}: sha256 must be the 64 hex digits of the key's SHA-256 "
                          "(paygrid-server new-api-key prints one), not the key itself")
    return ApiKeyEntry(tenant, digest)


def _api_keys_from_env(value: str) -> tuple[ApiKeyEntry, ...]:
    entries = []
    for i, item in enumerate(part.strip() for part in value.split(",") if part.strip()):
        tenant, sep, digest = item.partition(":")
        if not sep:
            raise ConfigError(f"{API_KEYS_ENV}[{i}]: expected tenant:sha256, got {item!r}")
        entries.append(_api_key(tenant, digest, f"{API_KEYS_ENV}[{i}]"))
    return tuple(entries)


def _from_file(config: ServerConfig, path: Path) -> ServerConfig:
    try:
        table = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from error
    sections = {name: table.pop(name, None)
                for name in ("server", "tls", "observability", "postgres")}
    auth = table.pop("auth", None)
    channels = table.pop("channels", None)
    if table:
        raise ConfigError(f"{path}: unknown sections {', '.join(sorted(table))}")
    for name, section in sections.items():
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ConfigError(f"{name}: expected a [{name}] table")
        section = dict(section)
        for setting in SETTINGS:
            if setting.section == name and setting.key in section:
                value = _coerce(setting, section.pop(setting.key), f"{name}.{setting.key}")
                config = _set(config, setting.path, value)
        if section:
            raise ConfigError(f"{name}: unknown keys {', '.join(sorted(section))}")
    if auth is not None:
        auth = dict(auth)
        keys = _take(auth, "api_keys", list, "auth", [])
        if auth:
            raise ConfigError(f"auth: unknown keys {', '.join(sorted(auth))}")
        entries = []
        for i, entry in enumerate(keys):
            where = f"auth.api_keys[{i}]"
            if not isinstance(entry, dict) or set(entry) != {"tenant", "sha256"}:
                raise ConfigError(f"{where}: expected {{ tenant = \"...\", sha256 = \"...\" }}")
            entries.append(_api_key(entry["tenant"], entry["sha256"], where))
        config = replace(config, auth=AuthConfig(tuple(entries)))
    if channels is not None:
        if not isinstance(channels, list) or not channels:
            raise ConfigError("channels: give at least one [[channels]] table")
        parsed = tuple(_channel(c, f"channels[{i}]") for i, c in enumerate(channels))
        names = [c.name for c in parsed]
        if len(set(names)) != len(names):
            raise ConfigError(f"channels: names must be unique, got {names}")
        config = replace(config, channels=parsed)
    return config


def _check_whole(config: ServerConfig) -> ServerConfig:
    tls = config.tls
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ConfigError("tls: cert_file and key_file go together")
    if tls.client_ca_file is not None and tls.cert_file is None:
        raise ConfigError("tls.client_ca_file (mTLS) needs cert_file and key_file (TLS) as well")
    for name in ("cert_file", "key_file", "client_ca_file"):
        path = getattr(tls, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"tls.{name}: no such file {str(path)!r}")
    if 2 * config.batch_lease_renew_every_ms > config.batch_lease_ms:
        raise ConfigError(
            f"server.batch_lease_renew_every_ms ({config.batch_lease_renew_every_ms}) must be at "
            f"most half of server.batch_lease_ms ({config.batch_lease_ms}), so a live replica "
            "renews its leases before they run out")
    return config


def load_config(path: Path | None, flags: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Defaults < file < environment < flags. `flags` maps a Setting's dest
    (e.g. "tls_cert_file") to a value; None means not given."""
    environ = os.environ if environ is None else environ
    config = ServerConfig()
    if path is not None:
        config = _from_file(config, path)
    for setting in SETTINGS:
        if environ.get(setting.env):
            config = _set(config, setting.path,
                          _coerce(setting, environ[setting.env], setting.env))
    if environ.get(API_KEYS_ENV):
        config = replace(config, auth=AuthConfig(_api_keys_from_env(environ[API_KEYS_ENV])))
    for setting in SETTINGS:
        value = (flags or {}).get(setting.dest)
        if value is not None:
            config = _set(config, setting.path, _coerce(setting, value, setting.flag))
    return _check_whole(config)
