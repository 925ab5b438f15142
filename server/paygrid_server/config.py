"""Server configuration: defaults, a TOML file, then environment and flags.

Every value is checked when loaded; a bad one stops start-up with a message
naming the key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from paygrid_server.domain import limits
from paygrid_server.domain.currencies import MINOR_UNITS
from paygrid_server.simulator.channel_simulator import SimulatorBehaviour


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


DEFAULT_CHANNELS = (
    ChannelConfig("card", priority=10, simulator=SimulatorBehaviour(latency_ms=20, jitter_ms=10)),
    ChannelConfig("wallet", currencies=frozenset({"USD", "EUR", "GBP"}),
                  max_amount_minor=1_000_000, priority=20,
                  simulator=SimulatorBehaviour(latency_ms=10, jitter_ms=5)),
    ChannelConfig("bank_transfer", currencies=frozenset({"EUR", "GBP", "USD", "CHF"}),
                  priority=30, simulator=SimulatorBehaviour(latency_ms=50, jitter_ms=20)),
)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    database_path: Path = Path("var/paygrid.sqlite3")
    channels: tuple[ChannelConfig, ...] = field(default=DEFAULT_CHANNELS)
    breaker_failure_threshold: int = 5
    breaker_open_ms: int = 5_000
    recovery_interval_ms: int = 5_000
    shutdown_grace_ms: int = 10_000


def _take(table: dict[str, Any], key: str, kind: type, where: str, default: Any) -> Any:
    if key not in table:
        return default
    value = table.pop(key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def _positive(value: int, where: str) -> int:
    if value <= 0:
        raise ConfigError(f"{where}: must be greater than 0, got {value}")
    return value


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
        min_amount_minor=_positive(_take(table, "min_amount_minor", int, where, 1),
                                   f"{where}.min_amount_minor"),
        max_amount_minor=_positive(_take(table, "max_amount_minor", int, where,
                                         limits.MAX_AMOUNT_MINOR), f"{where}.max_amount_minor"),
        priority=_take(table, "priority", int, where, 100),
        timeout_ms=_positive(_take(table, "timeout_ms", int, where, 2_000), f"{where}.timeout_ms"),
        simulator=simulator,
    )
    leftovers = sorted(table) + [f"simulator.{k}" for k in sorted(sim_table)]
    if leftovers:
        raise ConfigError(f"{where}: unknown keys {', '.join(leftovers)}")
    if config.min_amount_minor > config.max_amount_minor:
        raise ConfigError(f"{where}: min_amount_minor is above max_amount_minor")
    return config


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> ServerConfig:
    config = ServerConfig()
    if path is not None:
        try:
            table = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"{path}: {error}") from error
        server = dict(table.pop("server", {}))
        channels = table.pop("channels", None)
        if table:
            raise ConfigError(f"{path}: unknown sections {', '.join(sorted(table))}")
        config = replace(
            config,
            listen=_take(server, "listen", str, "server", config.listen),
            database_path=Path(_take(server, "database", str, "server",
                                     str(config.database_path))),
            breaker_failure_threshold=_positive(_take(
                server, "breaker_failure_threshold", int, "server",
                config.breaker_failure_threshold), "server.breaker_failure_threshold"),
            breaker_open_ms=_positive(_take(server, "breaker_open_ms", int, "server",
                                            config.breaker_open_ms), "server.breaker_open_ms"),
            recovery_interval_ms=_positive(_take(
                server, "recovery_interval_ms", int, "server", config.recovery_interval_ms),
                "server.recovery_interval_ms"),
            shutdown_grace_ms=_positive(_take(server, "shutdown_grace_ms", int, "server",
                                              config.shutdown_grace_ms), "server.shutdown_grace_ms"),
        )
        if server:
            raise ConfigError(f"server: unknown keys {', '.join(sorted(server))}")
        if channels is not None:
            if not isinstance(channels, list) or not channels:
                raise ConfigError("channels: give at least one [[channels]] table")
            parsed = tuple(_channel(c, f"channels[{i}]") for i, c in enumerate(channels))
            names = [c.name for c in parsed]
            if len(set(names)) != len(names):
                raise ConfigError(f"channels: names must be unique, got {names}")
            config = replace(config, channels=parsed)
    for key, value in (overrides or {}).items():
        if value is not None:
            config = replace(config, **{key: value})
    return config
