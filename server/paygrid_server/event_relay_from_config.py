"""The RabbitMQ event relay for a configured app, with the position and
leadership of its storage engine; None while [events.rabbitmq] url is empty.
Part of the composition root (app.py calls it)."""

from __future__ import annotations

from paygrid_server.brokers.rabbitmq_publisher import RabbitMqPublisher
from paygrid_server.config_model import ServerConfig
from paygrid_server.domain.events.event_relay import EventRelay
from paygrid_server.domain.ports.event_log import EventLog
from paygrid_server.storage.database import Database
from paygrid_server.storage.postgres.database import PostgresDatabase, redacted_dsn
from paygrid_server.storage.postgres.relay_leadership import PostgresRelayLeadership
from paygrid_server.storage.postgres.relay_position import PostgresRelayPosition
from paygrid_server.storage.sqlite.relay_leadership import SqliteRelayLeadership
from paygrid_server.storage.sqlite.relay_position import SqliteRelayPosition


def event_relay_for(config: ServerConfig, database: Database,
                    event_log: EventLog) -> EventRelay | None:
    settings = config.events_rabbitmq
    if not settings.enabled:
        return None
    publisher = RabbitMqPublisher(settings.url, settings.exchange)
    broker = f"{redacted_dsn(settings.url)} exchange {settings.exchange} ([events.rabbitmq] url)"
    if isinstance(database, PostgresDatabase):
        assert config.postgres_dsn is not None
        leadership = PostgresRelayLeadership(config.postgres_dsn,
                                             config.postgres.connect_timeout_ms / 1_000)
        return EventRelay(event_log, PostgresRelayPosition(database), leadership, publisher,
                          broker=broker)
    return EventRelay(event_log, SqliteRelayPosition(database),
                      SqliteRelayLeadership(config.database_path), publisher, broker=broker)
