"""The tests' servers get ports outside the ephemeral range
(tests/support/local_process.py says why), a port bound already is passed
over, and no port is handed out twice in one run."""

from __future__ import annotations

import itertools
import socket

import pytest

from tests.support import local_process
from tests.support.local_process import free_loopback_port


def test_ports_are_outside_the_range_outgoing_connections_take_theirs_from() -> None:
    start = local_process._ephemeral_ports_start()
    if start <= local_process.LOWEST_PORT:
        pytest.skip(f"this machine's ephemeral ports start at {start}: no room below them")
    ports = [free_loopback_port() for _ in range(200)]
    assert all(local_process.LOWEST_PORT <= port < start for port in ports)
    assert len(set(ports)) == len(ports)  # none handed out twice


def test_a_port_bound_already_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    ports = local_process._PORTS
    if not ports:
        pytest.skip("no room below this machine's ephemeral ports")
    with socket.socket() as held:
        for index, port in enumerate(ports):  # the first port free now: hold it
            try:
                held.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        held.listen()
        monkeypatch.setattr(local_process, "_turns", itertools.count(index))
        handed = free_loopback_port()
        assert handed != port
        with socket.socket() as s:
            s.bind(("127.0.0.1", handed))  # free indeed
