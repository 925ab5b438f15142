"""Server configuration: defaults, then a TOML file, then environment, then flags.

Every scalar setting has one name in each source, listed once in SETTINGS
(config_settings.py: `[tls] cert_file` = `PAYGRID_TLS_CERT_FILE` = `--tls-cert-file`). Every value
is checked when loaded; a bad one stops start-up with a message naming the
key and where it came from.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from paygrid_server.api_keys import SHA256_HEX_PATTERN, TENANT_ID_PATTERN, ApiKeyEntry
from paygrid_server.config_model import (  # noqa: F401 - re-exported: the settings' shape
    AuthConfig,
    ChannelConfig,
    ConfigError,
    DEFAULT_CHANNELS,
    EventsConfig,
    EventsRabbitMqConfig,
    ObservabilityConfig,
    POSTGRES_SCHEMES,
    PostgresConfig,
    SQLITE_SCHEME,
    ServerConfig,
    SimulatorBehaviour,
    TlsConfig,
)
from paygrid_server.config_settings import SETTINGS, Setting, coerce, set_setting  # noqa: F401
from paygrid_server.config_tables import channel_from_table, take

# Not scalars: API keys are a list ([auth] api_keys, or PAYGRID_API_KEYS as
# "tenant:sha256,tenant:sha256"); channels are [[channels]] tables.
API_KEYS_ENV = "PAYGRID_API_KEYS"


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


def _pop_table(table: dict[str, Any], name: str) -> Any:
    """`name`'s table (dotted: a table inside a table), taken out of
    `table`; a parent left empty goes too, so it is not an unknown section."""
    parent_name, _, key = name.rpartition(".")
    if not parent_name:
        return table.pop(name, None)
    parent = table.get(parent_name)
    if not isinstance(parent, dict):
        return None
    found = parent.pop(key, None)
    if not parent:
        del table[parent_name]
    return found


def _from_file(config: ServerConfig, path: Path) -> ServerConfig:
    try:
        table = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from error
    # "events.rabbitmq" before "events": the nested table is taken out of
    # [events] first, so it is not reported as an unknown key there.
    sections = {name: _pop_table(table, name)
                for name in ("server", "tls", "observability", "postgres",
                             "events.rabbitmq", "events")}
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
                value = coerce(setting, section.pop(setting.key), f"{name}.{setting.key}")
                config = set_setting(config, setting.path, value)
        if section:
            raise ConfigError(f"{name}: unknown keys {', '.join(sorted(section))}")
    if auth is not None:
        auth = dict(auth)
        keys = take(auth, "api_keys", list, "auth", [])
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
        parsed = tuple(channel_from_table(c, f"channels[{i}]") for i, c in enumerate(channels))
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
        raw = environ.get(setting.env)
        if raw or (raw == "" and setting.empty_turns_off):
            config = set_setting(config, setting.path, coerce(setting, raw, setting.env))
    if environ.get(API_KEYS_ENV):
        config = replace(config, auth=AuthConfig(_api_keys_from_env(environ[API_KEYS_ENV])))
    for setting in SETTINGS:
        value = (flags or {}).get(setting.dest)
        if value is not None:
            config = set_setting(config, setting.path, coerce(setting, value, setting.flag))
    return _check_whole(config)
