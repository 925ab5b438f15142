"""Typed fields of a TOML table, and a [[channels]] table read into a
ChannelConfig: every value checked, a bad one named with where it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paygrid_server.config_model import ChannelConfig, ConfigError, SimulatorBehaviour
from paygrid_server.domain.model import limits
from paygrid_server.domain.model.currencies import MINOR_UNITS


def take(table: dict[str, Any], key: str, kind: type, where: str, default: Any) -> Any:
    if key not in table:
        return default
    value = table.pop(key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def _positive_int(table: dict[str, Any], key: str, where: str, default: int) -> int:
    value = take(table, key, int, where, default)
    if value <= 0:
        raise ConfigError(f"{where}.{key}: must be greater than 0, got {value}")
    return value


def _optional_path(table: dict[str, Any], key: str, where: str) -> Path | None:
    value = take(table, key, str, where, None)
    return Path(value) if value else None


def channel_from_table(table: dict[str, Any], where: str) -> ChannelConfig:
    table = dict(table)
    name = take(table, "name", str, where, "")
    if not name or len(name) > limits.CHANNEL_NAME_MAX_CHARS:
        raise ConfigError(f"{where}.name: required, 1-{limits.CHANNEL_NAME_MAX_CHARS} characters")
    currencies = frozenset(take(table, "currencies", list, where, []))
    unknown = sorted(c for c in currencies if c not in MINOR_UNITS)
    if unknown:
        raise ConfigError(f"{where}.currencies: not ISO 4217 codes: {', '.join(map(str, unknown))}")
    sim_table = dict(take(table, "simulator", dict, where, {}))
    sim_where = f"{where}.simulator"
    simulator = SimulatorBehaviour(
        latency_ms=take(sim_table, "latency_ms", float, sim_where, 0.0),
        jitter_ms=take(sim_table, "jitter_ms", float, sim_where, 0.0),
        failure_rate=take(sim_table, "failure_rate", float, sim_where, 0.0),
        seed=take(sim_table, "seed", int, sim_where, None),
    )
    config = ChannelConfig(
        name=name,
        target=take(table, "target", str, where, None),
        currencies=currencies,
        min_amount_minor=_positive_int(table, "min_amount_minor", where, 1),
        max_amount_minor=_positive_int(table, "max_amount_minor", where, limits.MAX_AMOUNT_MINOR),
        priority=take(table, "priority", int, where, 100),
        timeout_ms=_positive_int(table, "timeout_ms", where, 2_000),
        simulator=simulator,
        simulator_in_process=take(sim_table, "in_process", bool, sim_where, False),
        tls_ca_file=_optional_path(table, "tls_ca_file", where),
        tls_cert_file=_optional_path(table, "tls_cert_file", where),
        tls_key_file=_optional_path(table, "tls_key_file", where),
        tls_server_name=take(table, "tls_server_name", str, where, None),
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
