"""Start-up failures a user can cause, told as one line and exit code 2.

A port in use, a database locked or unreadable, TLS files that are not a
certificate and its key, a bad configuration: each is the operator's to fix,
so it ends the process with

    paygrid-server: <cause> (<setting to change>)

on stderr and exit code 2 (as argparse does for a bad flag), never a
traceback, and never a process left alive serving nothing (app.py closes
what it opened before the failure reaches main).
"""

from __future__ import annotations

import sqlite3
import ssl
from pathlib import Path

from paygrid_server.config import TlsConfig
from paygrid_server.domain.ports.storage_errors import StorageUnavailable
from paygrid_server.storage.database_lock import DatabaseLocked, LockNotInherited
from paygrid_server.storage.postgres.database import PostgresUnavailable
from paygrid_server.storage.sqlite.connection import SqliteTooOld

EXIT_CODE = 2

DATABASE_SETTING = "--database, PAYGRID_DATABASE or [server] database"
LISTEN_SETTING = "--listen, PAYGRID_LISTEN or [server] listen"
METRICS_SETTING = ("--metrics-listen, PAYGRID_METRICS_LISTEN or [observability] metrics_listen; "
                   "\"\" turns it off")
TLS_SETTING = "[tls] cert_file, key_file, client_ca_file (or --tls-cert-file, --tls-key-file, " \
              "--tls-client-ca-file)"
CONFIG_SETTING = "the setting named; paygrid-server check-config shows the effective values"


class StartupFailure(Exception):
    def __init__(self, cause: str, setting: str) -> None:
        self.cause = cause
        self.setting = setting
        super().__init__(cause)

    def line(self) -> str:
        return f"paygrid-server: {self.cause} ({self.setting})"


def bad_config(error: Exception) -> StartupFailure:
    return StartupFailure(f"bad configuration: {error}", CONFIG_SETTING)


def database_failure(error: BaseException, shown: str) -> StartupFailure | None:
    """The failure to open the database as a StartupFailure; None for an error
    that is not the operator's (a bug keeps its traceback)."""
    if isinstance(error, DatabaseLocked):
        return StartupFailure(
            f"{error}; stop that server, or give this one another database "
            "(one server per SQLite file: `--workers N` runs several processes of one server "
            "on it; several replicas need PostgreSQL)",
            DATABASE_SETTING)
    if isinstance(error, (PostgresUnavailable, LockNotInherited)):
        return StartupFailure(str(error), DATABASE_SETTING)
    if isinstance(error, (sqlite3.Error, OSError, StorageUnavailable, SqliteTooOld)):
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        return StartupFailure(f"cannot open database {shown}: {reason}", DATABASE_SETTING)
    return None


def port_in_use(listen: str, reuse_port: bool) -> StartupFailure:
    hint = "" if reuse_port else "; --reuse-port true shares it with other paygrid processes " \
                                 "on purpose"
    return StartupFailure(
        f"cannot listen on {listen}: the address is in use or not available here{hint}",
        LISTEN_SETTING)


def metrics_port_in_use(listen: str, error: OSError) -> StartupFailure:
    return StartupFailure(f"cannot serve /metrics on {listen}: {error.strerror or error}",
                          METRICS_SETTING)


def check_tls_files(tls: TlsConfig) -> None:
    """Loads the files with Python's ssl module first: given a bad pair,
    grpc would only log it and fail every handshake, or abort the process."""
    if tls.cert_file is None or tls.key_file is None:
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as error:
        raise StartupFailure(
            f"TLS certificate {_name(tls.cert_file)} and key {_name(tls.key_file)} cannot be "
            f"used together: {_reason(error)}", TLS_SETTING) from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError) as error:
            raise StartupFailure(
                f"TLS client CA {_name(tls.client_ca_file)} cannot be used: {_reason(error)}",
                TLS_SETTING) from None


def _name(path: Path) -> str:
    return repr(str(path))


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error)
