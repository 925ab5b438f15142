"""What a configured paygrid is: the frozen settings every part is built
from. Reading them from a file, the environment and flags is config.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from paygrid_server.api_keys import ApiKeyEntry
from paygrid_server.domain.model import limits
from paygrid_server.storage.postgres.database import redacted_dsn


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SimulatorBehaviour:
    """How a channel simulator behaves (simulator/channel_simulator.py):
    configured here so config never imports the simulator, a separate
    program the server may start."""
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    failure_rate: float = 0.0  # share of Charge calls failing UNAVAILABLE before processing
    seed: int | None = None
    bulk_charge: bool = True  # False: ChargeBatch answers UNIMPLEMENTED

    def __post_init__(self) -> None:
        assert self.latency_ms >= 0 and self.jitter_ms >= 0
        assert 0.0 <= self.failure_rate <= 1.0


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


@dataclass(frozen=True, slots=True)
class EventsConfig:
    """The event log's retention and its watchers."""
    retention_days: int = 30  # events older are deleted (never past a consumer's cursor); 0: kept
    prune_interval_ms: int = 60_000  # how often a pruning round runs
    prune_chunk_rows: int = 1_000  # events deleted per transaction
    # Open WatchEvents streams: each costs memory, not CPU, while idle, and
    # does not count against max_concurrent_calls (it would starve Pay).
    max_watchers: int = 10_000


@dataclass(frozen=True, slots=True)
class EventsRabbitMqConfig:
    """The RabbitMQ event relay ([events.rabbitmq]); off while url is empty."""
    url: str = ""  # amqp://user:password@host:port/vhost (amqps:// for TLS)
    exchange: str = "paygrid.events"  # a durable topic exchange, declared at connect

    @property
    def enabled(self) -> bool:
        return bool(self.url)


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
    # Pay with wait=ACCEPTED: payments accepted and still running (their
    # calls have ended, so max_concurrent_calls does not bound them).
    max_accepted_payments: int = 512
    # Batch groups are work units any replica claims (leases in the database):
    batch_group_workers: int = 32  # groups this replica charges at once, all batches together
    batch_lease_ms: int = 15_000  # a group or a batch stream not renewed this long is taken over
    batch_lease_renew_every_ms: int = 5_000  # held leases are renewed this often (< lease / 2)
    batch_claim_poll_ms: int = 100  # an idle replica looks for groups to claim this often
    batch_progress_poll_ms: int = 100  # a stream looks for groups done by other replicas
    # A batch step (a message's items stored, a group started) waits at most
    # this long while callers wait for payments in this process (0: never):
    # domain/payments_first.py.
    batch_yield_to_payments_ms: int = 50
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
    events: EventsConfig = EventsConfig()
    events_rabbitmq: EventsRabbitMqConfig = EventsRabbitMqConfig()

    @property
    def database_engine(self) -> str:
        return "postgresql" if self.postgres_dsn else "sqlite"

    @property
    def database_shown(self) -> str:
        """Where the data is, fit for logs: the DSN without its password."""
        return redacted_dsn(self.postgres_dsn) if self.postgres_dsn else str(self.database_path)
