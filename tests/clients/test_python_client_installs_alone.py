"""The Python client installs and runs on its own: `pip install
./clients/python` into a fresh virtualenv (no paygrid server package in it)
imports the client and runs `paygrid --help`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from paygrid_client.currencies import MINOR_UNITS as CLIENT_MINOR_UNITS
from paygrid_server.domain.model.currencies import MINOR_UNITS as SERVER_MINOR_UNITS

ROOT = Path(__file__).resolve().parents[2]


def test_the_client_installs_alone_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    # A copy of what the build reads, so the checkout gets no build/ folder.
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "clients" / "python", checkout / "clients" / "python",
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    shutil.copytree(ROOT / "protos", checkout / "protos")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet",
                    str(checkout / "clients" / "python")], check=True, timeout=600)
    shown = subprocess.run([str(venv / "bin" / "paygrid"), "--help"], capture_output=True,
                           text=True, timeout=60, check=True)
    assert shown.stdout.startswith("usage: paygrid")
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import sys, paygrid_client, paygrid_client.cli, paygrid_client.iso20022_batch; "
         "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('paygrid')}))"],
        capture_output=True, text=True, timeout=60, check=True)
    assert imported.stdout.strip() == "['paygrid', 'paygrid_client']"
    server = subprocess.run([str(venv / "bin" / "python"), "-c", "import paygrid_server"],
                            capture_output=True, timeout=60)
    assert server.returncode != 0, "the fresh virtualenv has no server package"


def test_the_clients_currency_table_is_the_servers() -> None:
    assert CLIENT_MINOR_UNITS == SERVER_MINOR_UNITS
