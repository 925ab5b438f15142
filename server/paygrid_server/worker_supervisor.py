"""`serve --workers N`: N server processes on one port, and the process
that watches them (issue 17, point 4).

Python runs one event loop on one core; N workers use N. Each worker is a
plain `serve` process with `reuse_port` on, so the kernel spreads new
connections over them (SO_REUSEPORT, turned on here deliberately and only
here). On PostgreSQL each worker is a replica like any other: payments,
batch groups and batch streams are handed over between workers by the
database's leases and hand-off rules, exactly as between machines.

On SQLite the workers share the file (WAL; every write is a BEGIN
IMMEDIATE transaction, so they take turns as writers): the supervisor holds
the one-server-per-file lock for them and hands each worker its descriptor
(storage/database_lock.py); each worker's stores keep the replica rules
(storage/sqlite/file_sharing.py), told by FIRST_WORKER_ENV whether it may
take up everything unfinished at its start.
Batch groups and streams are leased in the file as on PostgreSQL
(storage/sqlite/group_queue.py).

The supervisor:
- holds the port (transport/port_hold.py), so a second `serve` on it, with or
  without workers, is refused with one line, as before;
- starts the workers one after another, each once the one before says it
  serves (a start-up failure is then told once, by the first worker, and
  migrations run in one process);
- forwards SIGTERM and SIGINT to every worker (graceful stop; a second
  signal stops them at once, as for one server) and exits 0 when all
  stopped cleanly;
- starts a worker again when it dies (SIGKILL, OOM), telling the new one
  which replicas of its slot died (DEAD_REPLICAS_ENV; all of them, as one
  killed while starting may not have done this for its predecessor): their
  batch group and stream leases are expired at once, so its groups are taken over now rather than when
  batch_lease_ms runs out; its payments follow the hand-off rule (payments
  carry no owner to tell them by).
Each worker counts its callers waiting for payments in a slot of a memfd
the supervisor makes (worker_payment_counts.py), so batch steps in every
worker give way to any worker's payments (domain/payments_first.py).
Workers run in their own session, so a terminal's Ctrl-C reaches only the
supervisor (one stop signal, forwarded once), and get SIGTERM from the
kernel if the supervisor itself dies (PR_SET_PDEATHSIG): no worker outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
import uuid

import structlog

from paygrid_server import startup_failure
from paygrid_server.config import ServerConfig
from paygrid_server.storage.database_lock import DatabaseLock, DatabaseLocked
from paygrid_server.transport.port_hold import PortHold
from paygrid_server.worker_payment_counts import WorkerPaymentCounts

log = structlog.get_logger("paygrid.workers")

READY_FD_ENV = "PAYGRID_READY_FD"  # a worker writes one byte there once it serves
WORKER_OF_ENV = "PAYGRID_WORKER_OF"  # the supervisor's pid, in each worker's logs
REPLICA_NONCE_ENV = "PAYGRID_REPLICA_NONCE"  # so the supervisor knows each worker's replica id
DEAD_REPLICAS_ENV = "PAYGRID_DEAD_REPLICAS"  # those a restarted worker replaces, comma-separated
# SQLite: the descriptor of the supervisor's lock on the file, for the worker to hold it by.
DATABASE_LOCK_FD_ENV = "PAYGRID_DATABASE_LOCK_FD"
# "1" for the first worker a supervisor starts: no other worker lives yet
# (they start one after another), so what is unfinished in the file is no
# live process's, and it may take everything up at once.
FIRST_WORKER_ENV = "PAYGRID_FIRST_WORKER"
# Dead replicas told to a restarted worker at most: the last ones (expiring
# an older one's leases again finds nothing).
DEAD_REPLICAS_TOLD = 16
# A worker that dies sooner than this after its start is started again only
# after this long, so a worker that cannot run does not spin a core.
RESTART_PAUSE_S = 1.0
_PR_SET_PDEATHSIG = 1


def worker_count(value: str) -> int:
    """`auto` (the cores this process may run on) or a number from 1."""
    if value == "auto":
        return len(os.sched_getaffinity(0))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"expected auto or a number of processes from 1, got {value!r}")
    return int(value)


def worker_metrics_listen(metrics_listen: str, index: int) -> str:
    """Each worker has its own /metrics: port + index (0 stays 0, "" off)."""
    host, _, port = metrics_listen.rpartition(":")
    if not metrics_listen or port == "0":
        return metrics_listen
    return f"{host}:{int(port) + index}"


class WorkerSupervisor:
    def __init__(self, config: ServerConfig, workers: int, serve_args: list[str]) -> None:
        self._config = config
        self._workers = workers
        self._serve_args = serve_args  # the supervisor's own, for each worker
        self._processes: dict[int, asyncio.subprocess.Process] = {}  # by worker index
        self._stopping = asyncio.Event()
        self._failed: int | None = None  # a worker's start-up failure exit code
        self._database_lock: DatabaseLock | None = None  # SQLite: held for the workers
        self._started_any = False
        # Callers waiting for payments per worker, for each worker to see the others'.
        self._payment_counts: WorkerPaymentCounts | None = None

    async def run(self) -> int:
        """Until stopped; the exit code of the whole."""
        with (self._database_held(), PortHold.take(self._config.listen) as held,
              self._payment_counts_shared()):
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop, sig)
            listen = f"{self._config.listen.rpartition(':')[0]}:{held.port}"
            log.info("workers.starting", workers=self._workers, listen=listen,
                     database=self._config.database_shown)
            simulated = [c.name for c in self._config.channels if c.target is None]
            if simulated:
                log.warning("workers.simulator_per_worker", channels=simulated,
                            hint="each worker simulates these channels with a ledger of its "
                                 "own: a payment taken over from a dead worker is settled "
                                 "against another ledger; give them a target but for load tests")
            slots = []
            for index in range(self._workers):
                ready = asyncio.Event()
                slots.append(asyncio.create_task(self._keep_running(index, listen, ready)))
                await _first(ready.wait(), self._stopping.wait())
                if self._stopping.is_set():
                    break
            if not self._stopping.is_set():
                print(f"paygrid serving on {listen} with {self._workers} workers "
                      f"(database {self._config.database_shown})", file=sys.stderr, flush=True)
            codes = await asyncio.gather(*slots)
        if self._failed is not None:
            return self._failed
        return 0 if all(code == 0 for code in codes) else 1

    @contextlib.contextmanager
    def _database_held(self):
        """SQLite: the file's lock, for the workers (refused, one line, if
        another server holds it); PostgreSQL: nothing to hold."""
        if self._config.postgres_dsn:
            yield
            return
        path = self._config.database_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = DatabaseLock.take(path)
        except (DatabaseLocked, OSError) as error:
            raise startup_failure.database_failure(
                error, self._config.database_shown) from None
        self._database_lock = lock
        try:
            yield
        finally:
            self._database_lock = None
            lock.release()

    @contextlib.contextmanager
    def _payment_counts_shared(self):
        self._payment_counts = WorkerPaymentCounts(self._workers)
        try:
            yield
        finally:
            self._payment_counts.close()
            self._payment_counts = None

    def _stop(self, sig: signal.Signals) -> None:
        log.info("workers.stopping", signal=sig.name, workers=len(self._processes))
        self._stopping.set()
        for process in self._processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)

    async def _keep_running(self, index: int, listen: str, ready: asyncio.Event) -> int:
        """Worker `index`, started again each time it dies, until the stop;
        returns its last exit code."""
        dead: list[str] = []
        while True:
            started = time.monotonic()
            nonce = uuid.uuid4().hex[:8]
            process = await self._spawn(index, listen, ready, nonce, dead)
            code = await process.wait()
            dead = [*dead, _replica(process.pid, nonce)][-DEAD_REPLICAS_TOLD:]
            self._processes.pop(index, None)
            assert self._payment_counts is not None
            self._payment_counts.clear(index)
            if self._stopping.is_set():
                log.info("workers.worker_stopped", index=index, pid=process.pid, exit_code=code)
                return code
            if code == startup_failure.EXIT_CODE and not ready.is_set():
                # It could not start (its one line says why): nor would the others.
                self._failed = code
                self._stop(signal.SIGTERM)
                return code
            log.warning("workers.worker_died", index=index, pid=process.pid, exit_code=code,
                        hint="started again; its work is taken over by the replica rules")
            if time.monotonic() - started < RESTART_PAUSE_S:
                await _first(asyncio.sleep(RESTART_PAUSE_S), self._stopping.wait())
                if self._stopping.is_set():
                    return code

    async def _spawn(self, index: int, listen: str, ready: asyncio.Event, nonce: str,
                     dead: list[str]) -> asyncio.subprocess.Process:
        read_end, write_end = os.pipe()
        supervisor = os.getpid()
        env = {**os.environ, READY_FD_ENV: str(write_end), WORKER_OF_ENV: str(supervisor),
               REPLICA_NONCE_ENV: nonce, **({DEAD_REPLICAS_ENV: ",".join(dead)} if dead else {})}
        for told_below in (FIRST_WORKER_ENV, DATABASE_LOCK_FD_ENV):
            env.pop(told_below, None)  # never passed on from this process's own environment
        assert self._payment_counts is not None
        env.update(self._payment_counts.worker_env(index))
        pass_fds = [write_end, self._payment_counts.fd]
        if not self._started_any:
            env[FIRST_WORKER_ENV] = "1"
        self._started_any = True
        if self._database_lock is not None:
            env[DATABASE_LOCK_FD_ENV] = str(self._database_lock.fd)
            pass_fds.append(self._database_lock.fd)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "paygrid_server", *self._serve_args,
                "--workers", "1", "--listen", listen, "--reuse-port", "true",
                "--metrics-listen",
                worker_metrics_listen(self._config.observability.metrics_listen, index),
                env=env, pass_fds=pass_fds, start_new_session=True,
                preexec_fn=lambda: _die_with(supervisor))
        finally:
            os.close(write_end)
        self._processes[index] = process
        if self._stopping.is_set():  # the stop came while it was being started
            process.send_signal(signal.SIGTERM)
        log.info("workers.worker_started", index=index, pid=process.pid)
        asyncio.create_task(self._told_ready(index, process.pid, read_end, ready))
        return process

    async def _told_ready(self, index: int, pid: int, read_end: int,
                          ready: asyncio.Event) -> None:
        """The byte the worker writes once it serves (none if it dies first)."""
        try:
            told = await asyncio.to_thread(os.read, read_end, 1)
        finally:
            os.close(read_end)
        if told:
            log.info("workers.worker_ready", index=index, pid=pid)
            ready.set()


def _replica(pid: int, nonce: str) -> str:
    """A replica's id in leases (host:pid:nonce): unique per process."""
    return f"{socket.gethostname()}:{pid}:{nonce}"


def replica_id() -> str:
    """This process's replica id; a worker's nonce is its supervisor's choice."""
    return _replica(os.getpid(), os.environ.get(REPLICA_NONCE_ENV) or uuid.uuid4().hex[:8])


def inherited_database_lock_fd() -> int | None:
    """In a SQLite worker: the supervisor's lock on the file (None alone)."""
    fd = os.environ.pop(DATABASE_LOCK_FD_ENV, None)
    return int(fd) if fd else None


def supervisor_pid() -> str | None:
    """In a worker: its supervisor's pid, as the supervisor wrote it (None alone)."""
    return os.environ.get(WORKER_OF_ENV)


def is_worker() -> bool:
    return supervisor_pid() is not None


def is_first_worker() -> bool:
    """The first worker of its supervisor: nothing else lived at its start."""
    return os.environ.get(FIRST_WORKER_ENV) == "1"


def dead_predecessors() -> list[str]:
    """In a restarted worker: the replicas it replaces, all exited."""
    return [r for r in os.environ.get(DEAD_REPLICAS_ENV, "").split(",") if r]


def _die_with(supervisor: int) -> None:
    """In the worker, before exec: SIGTERM when the supervisor dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # died before the line above
        os._exit(1)


async def _first(*waits) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def tell_ready() -> None:
    """In a worker: tells the supervisor it serves (nothing for a lone server)."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is None:
        return
    try:
        os.write(int(fd), b"R")
        os.close(int(fd))
    except OSError:
        pass  # the supervisor is gone; PR_SET_PDEATHSIG ends this process
