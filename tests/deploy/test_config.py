"""Configuration: the shipped example loads; bad values stop start-up clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc
from tests.support.api_key_metadata import keyed_channel
from paygrid_server.config import (
    DEFAULT_CHANNELS,
    SETTINGS,
    ConfigError,
    EventsConfig,
    ServerConfig,
    load_config,
)
from paygrid_server.domain.model import limits
from tests.conftest import pay_request
from tests.support.server_process import ServerProcess, free_port, write_config

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_matches_the_defaults() -> None:
    config = load_config(ROOT / "config" / "paygrid.example.toml")
    assert config == load_config(None)
    assert config.channels == DEFAULT_CHANNELS


@pytest.mark.parametrize(("text", "message"), [
    ("[server]\nlisten = 50051\n", "server.listen: expected str"),
    ("[server]\nport = 1\n", "server: unknown keys port"),
    ("[servers]\n", "unknown sections servers"),
    ("[[channels]]\nname = 'c'\ncurrencies = ['USD', 'EURO']\n", "not ISO 4217 codes: EURO"),
    ("[[channels]]\nname = 'c'\ntimeout_ms = 0\n", "channels[0].timeout_ms: must be greater than 0"),
    ("[[channels]]\nname = 'c'\n[[channels]]\nname = 'c'\n", "names must be unique"),
    ("[[channels]]\ncurrencies = []\n", "channels[0].name: required"),
    ("[[channels]]\nname = 'c'\nsimulator = { latency = 5 }\n", "unknown keys simulator.latency"),
    ("[server\n", "paygrid.toml"),
    ("[events.rabbitmq]\nurl = 'http://127.0.0.1:5672/'\n", "events.rabbitmq.url: expected amqp://"),
    ("[events.rabbitmq]\nurl = 'amqp://u:secret@:5672/'\n", "events.rabbitmq.url: .*u:\\*\\*\\*@"),
    ("[events.rabbitmq]\nurl = 'amqp://h:99999/'\n", "events.rabbitmq.url: expected amqp://"),
    ("[events.rabbitmq]\nurl = 'amqp://h/?heartbeat=65536'\n",
     "events.rabbitmq.url: expected heartbeat=0-65535 .*got '65536'"),
    ("[events.rabbitmq]\nurl = 'amqp://h/?heartbeat=-1'\n", "events.rabbitmq.url: expected heartbeat="),
    ("[events.rabbitmq]\nurl = 'amqp://h/?heartbeat=%C2%B2'\n", "events.rabbitmq.url: .*got '²'"),
    ("[events.rabbitmq]\nexchange = ''\n", "events.rabbitmq.exchange: expected 1-255"),
    ("[events.rabbitmq]\nexchange = 'amq.topic'\n", "events.rabbitmq.exchange: .*not amq"),
    ("[events.rabbitmq]\nurls = ''\n", "events.rabbitmq: unknown keys urls"),
    ("[events]\nrabbitmq = 1\n", "events.rabbitmq: expected a [events.rabbitmq] table"),
])
def test_bad_config_is_refused_with_the_key_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "paygrid.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)


@pytest.mark.parametrize("query", ["", "?heartbeat=0", "?heartbeat=65535", "?heartbeat=1&name=x"])
def test_a_relay_url_s_heartbeat_is_accepted_up_to_an_amqp_short(tmp_path: Path, query: str) -> None:
    path = tmp_path / "paygrid.toml"
    path.write_text(f"[events.rabbitmq]\nurl = 'amqp://guest:guest@127.0.0.1:5672/{query}'\n")
    assert load_config(path).events_rabbitmq.url.endswith(f"5672/{query}")


def test_server_exits_with_a_clear_message_on_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nbreaker_open_ms = -1\n")
    result = subprocess.run([sys.executable, "-m", "paygrid_server", "serve", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "bad configuration: server.breaker_open_ms: must be greater than 0" in result.stderr


def test_environment_overrides_the_file_and_flags_override_both(tmp_path: Path) -> None:
    path = tmp_path / "paygrid.toml"
    path.write_text("[server]\nmax_concurrent_calls = 10\nshutdown_grace_ms = 100\n"
                    "[observability]\nmetrics_listen = ''\n")
    config = load_config(path, {"shutdown_grace_ms": "300"},
                         environ={"PAYGRID_MAX_CONCURRENT_CALLS": "20",
                                  "PAYGRID_SHUTDOWN_GRACE_MS": "200"})
    assert (config.max_concurrent_calls, config.shutdown_grace_ms) == (20, 300)
    assert config.observability.metrics_listen == ""


def test_an_empty_variable_turns_off_what_empty_turns_off_and_is_unset_elsewhere(
        tmp_path: Path) -> None:
    # As observability.md says of the metrics port: "" turns it off, from the
    # environment too (a test server's or a container's that must not bind 9464).
    path = tmp_path / "paygrid.toml"
    path.write_text("[server]\nlisten = '127.0.0.1:6000'\n"
                    "[observability]\nmetrics_listen = '127.0.0.1:9999'\n"
                    "[events.rabbitmq]\nurl = 'amqp://guest:guest@127.0.0.1:5672/'\n")
    config = load_config(path, environ={"PAYGRID_METRICS_LISTEN": "",
                                        "PAYGRID_EVENTS_RABBITMQ_URL": "",
                                        "PAYGRID_LISTEN": "", "PAYGRID_MAX_CONCURRENT_CALLS": "",
                                        "PAYGRID_DATABASE": ""})
    assert config.observability.metrics_listen == ""
    assert not config.events_rabbitmq.enabled
    # Where "" is no value, the variable is as if not set: the file's, or the default.
    assert config.listen == "127.0.0.1:6000"
    assert config.max_concurrent_calls == ServerConfig().max_concurrent_calls
    assert config.database_path == ServerConfig().database_path
    # Not set at all: the file's.
    from_file = load_config(path, environ={})
    assert from_file.observability.metrics_listen == "127.0.0.1:9999"
    assert from_file.events_rabbitmq.enabled


@pytest.mark.parametrize(("environ", "message"), [
    ({"PAYGRID_MAX_CONCURRENT_CALLS": "many"}, "PAYGRID_MAX_CONCURRENT_CALLS: expected an integer"),
    ({"PAYGRID_LISTEN": "50051"}, "PAYGRID_LISTEN: expected host:port"),
    ({"PAYGRID_TRACING_EXPORTER": "jaeger"}, "PAYGRID_TRACING_EXPORTER: expected one of none"),
    ({"PAYGRID_API_KEYS": "acme"}, r"PAYGRID_API_KEYS\[0\]: expected tenant:sha256"),
    ({"PAYGRID_API_KEYS": "acme:pgk_secret"}, r"PAYGRID_API_KEYS\[0\]: sha256 must be the 64 hex"),
    ({"PAYGRID_API_KEYS": "Acme Corp:" + "0" * 64}, r"PAYGRID_API_KEYS\[0\]: tenant must be"),
    ({"PAYGRID_TLS_CERT_FILE": "/nonexistent.crt"}, "tls: cert_file and key_file go together"),
    ({"PAYGRID_TLS_CERT_FILE": "/nonexistent.crt", "PAYGRID_TLS_KEY_FILE": "/nonexistent.key"},
     "tls.cert_file: no such file"),
])
def test_bad_environment_is_refused_with_the_variable_named(environ, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, environ=environ)


def test_the_batch_yield_to_payments_is_0_to_its_limit(tmp_path: Path) -> None:
    longest = limits.BATCH_YIELD_TO_PAYMENTS_MAX_MS
    for good in (0, longest):
        assert load_config(None, environ={"PAYGRID_BATCH_YIELD_TO_PAYMENTS_MS": str(good)}
                           ).batch_yield_to_payments_ms == good
    for bad in (-1, longest + 1):
        with pytest.raises(ConfigError, match=f"PAYGRID_BATCH_YIELD_TO_PAYMENTS_MS: must be "
                                              f"0 to {longest}, got {bad}"):
            load_config(None, environ={"PAYGRID_BATCH_YIELD_TO_PAYMENTS_MS": str(bad)})
    path = tmp_path / "paygrid.toml"
    path.write_text(f"[server]\nbatch_yield_to_payments_ms = {longest + 1}\n")
    with pytest.raises(ConfigError, match="server.batch_yield_to_payments_ms: must be 0 to"):
        load_config(path, environ={})


@pytest.mark.parametrize(("text", "message"), [
    ("[auth]\napi_keys = [{ tenant = 'acme', sha256 = 'pgk_clear_text' }]\n",
     r"auth.api_keys\[0\]: sha256 must be the 64 hex digits"),
    ("[auth]\napi_keys = [{ tenant = 'acme' }]\n", r"auth.api_keys\[0\]: expected"),
    ("[auth]\nkeys = []\n", "auth: unknown keys keys"),
    ("[tls]\nclient_ca_file = 'ca.pem'\n", "tls.client_ca_file \\(mTLS\\) needs cert_file"),
    ("[[channels]]\nname = 'c'\ntarget = 'x:1'\ntls_cert_file = 'c.pem'\ntls_key_file = 'k.pem'\n",
     "channels\\[0\\]: a client certificate needs tls_ca_file"),
    ("[[channels]]\nname = 'c'\ntls_ca_file = 'ca.pem'\n",
     "channels\\[0\\]: TLS settings need a remote target"),
])
def test_bad_auth_and_tls_config_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "paygrid.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


def test_the_relay_is_off_by_default_and_set_by_file_environment_or_flag(tmp_path: Path) -> None:
    assert not load_config(None, environ={}).events_rabbitmq.enabled
    path = tmp_path / "paygrid.toml"
    path.write_text("[events.rabbitmq]\nurl = 'amqp://guest:guest@127.0.0.1:5672/'\n"
                    "exchange = 'ops.events'\n")
    from_file = load_config(path, environ={}).events_rabbitmq
    assert (from_file.url, from_file.exchange, from_file.enabled) == (
        "amqp://guest:guest@127.0.0.1:5672/", "ops.events", True)
    overridden = load_config(path, {"events_rabbitmq_exchange": "flag.events"},
                             environ={"PAYGRID_EVENTS_RABBITMQ_URL": "amqps://mq.example:5671/pg"})
    assert (overridden.events_rabbitmq.url, overridden.events_rabbitmq.exchange) == (
        "amqps://mq.example:5671/pg", "flag.events")


def test_every_setting_has_a_flag_and_check_config_prints_the_result(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "paygrid_server", "check-config", "--max-concurrent-calls", "7",
         "--metrics-listen", ""], capture_output=True, text=True, timeout=60,
        env={"PATH": "", "PAYGRID_SHUTDOWN_GRACE_MS": "1234"})
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert (printed["max_concurrent_calls"], printed["shutdown_grace_ms"]) == (7, 1234)
    assert printed["observability"]["metrics_listen"] == ""
    assert printed["events_rabbitmq"] == {"url": "", "exchange": "paygrid.events"}
    help_text = subprocess.run([sys.executable, "-m", "paygrid_server", "serve", "--help"],
                               capture_output=True, text=True, timeout=60).stdout
    for setting in SETTINGS:
        assert setting.flag in help_text and setting.env in help_text


async def test_a_new_api_key_works_against_a_server_configured_by_environment(
        tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, "-m", "paygrid_server", "new-api-key",
                           "--tenant", "acme"], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    key = next(line.strip() for line in made.stdout.splitlines()
               if line.strip().startswith("pgk_acme_"))
    env_line = next(line.strip() for line in made.stdout.splitlines()
                    if line.strip().startswith("PAYGRID_API_KEYS="))
    assert key not in env_line, "only the digest is configured"

    port = free_port()
    config = write_config(tmp_path / "paygrid.toml", port, tmp_path / "db.sqlite3", {})
    config.write_text(config.read_text() + "[[channels]]\nname = \"card\"\n")
    server = ServerProcess(config, tmp_path / "server.log")
    try:
        await server.start(port, env=dict([env_line.split("=", 1)]))
        async with keyed_channel(f"127.0.0.1:{port}", key) as channel:
            reply = await pb_grpc.PaymentServiceStub(channel).Pay(pay_request("k-acme"))
        assert reply.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
        async with keyed_channel(f"127.0.0.1:{port}") as channel:  # the dev key
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await pb_grpc.PaymentServiceStub(channel).Pay(pay_request("k-dev"))
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.terminate()
    assert key not in (tmp_path / "server.log").read_text()


def test_events_settings_come_from_file_environment_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "events.toml"
    path.write_text("[events]\nretention_days = 7\nprune_chunk_rows = 50\n")
    config = load_config(path, {"events_max_watchers": "3"},
                         environ={"PAYGRID_EVENTS_PRUNE_INTERVAL_MS": "1000"})
    assert config.events == EventsConfig(retention_days=7, prune_interval_ms=1_000,
                                         prune_chunk_rows=50, max_watchers=3)
    # 0 keeps every event; below that, and an empty chunk, are refused by name.
    assert load_config(None, environ={"PAYGRID_EVENTS_RETENTION_DAYS": "0"}
                       ).events.retention_days == 0
    with pytest.raises(ConfigError, match="PAYGRID_EVENTS_RETENTION_DAYS: must be 0 or more"):
        load_config(None, environ={"PAYGRID_EVENTS_RETENTION_DAYS": "-1"})
    path.write_text("[events]\nprune_chunk_rows = 0\n")
    with pytest.raises(ConfigError, match="events.prune_chunk_rows: must be greater than 0"):
        load_config(path, environ={})


def test_events_and_its_rabbitmq_table_are_read_from_one_file(tmp_path: Path) -> None:
    # [events.rabbitmq] is a table inside [events]: neither hides the other
    # nor is reported as an unknown key of it.
    path = tmp_path / "events.toml"
    path.write_text("[events]\nretention_days = 7\n\n[events.rabbitmq]\n"
                    'url = "amqp://guest:guest@127.0.0.1:5672/"\nexchange = "x.events"\n')
    config = load_config(path, environ={})
    assert config.events.retention_days == 7
    assert config.events_rabbitmq.url == "amqp://guest:guest@127.0.0.1:5672/"
    assert config.events_rabbitmq.exchange == "x.events"
    path.write_text("[events]\nretention_days = 7\nsurprise = 1\n")
    with pytest.raises(ConfigError, match="surprise"):
        load_config(path, environ={})
