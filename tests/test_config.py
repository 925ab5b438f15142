"""Configuration: the shipped example loads; bad values stop start-up clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from paygrid_server.config import DEFAULT_CHANNELS, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


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
])
def test_bad_config_is_refused_with_the_key_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "paygrid.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)


def test_server_exits_with_a_clear_message_on_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nbreaker_open_ms = -1\n")
    result = subprocess.run([sys.executable, "-m", "paygrid_server", "serve", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "bad configuration: server.breaker_open_ms: must be greater than 0" in result.stderr
